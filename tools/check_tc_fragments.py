# Checks, on the CPU, the index mapping of src/backend/cuda/cuda_matvec_tc.cu:
# each lane's loads and registers are laid out as the kernel does, the
# products follow PTX's fragment layouts of mma.m16n8k16 (A row-major 16x16,
# B column-major 16x8, C/D 16x8; PTX ISA, "Matrix Fragments for mma.m16n8k16
# with floating point type"), and the result must equal X @ W.T. Rows and k
# are not multiples of the tiles, and fewer than 8 tokens.  usage: python3
# tools/check_tc_fragments.py  (prints the largest error; exits 1 above 1e-9)
import numpy as np
rng=np.random.default_rng(1)
rows,k,nt=37,296,3
W=rng.standard_normal((rows,k)); X=rng.standard_normal((nt,k))
Y=np.zeros((nt,rows))
WARPS=8; TC_COLS=32
def mma(acc, A_lane, B_lane):
    # A_lane[lane] = (a0,a1,a2,a3) each a pair (2 values); B_lane[lane]=(b0,b1) pairs; acc[lane]=4 floats
    A=np.zeros((16,16)); B=np.zeros((16,8))
    for lane in range(32):
        g,t=lane//4,lane%4
        a0,a1,a2,a3=A_lane[lane]
        A[g,2*t:2*t+2]=a0; A[g+8,2*t:2*t+2]=a1; A[g,2*t+8:2*t+10]=a2; A[g+8,2*t+8:2*t+10]=a3
        b0,b1=B_lane[lane]
        B[2*t:2*t+2,g]=b0; B[2*t+8:2*t+10,g]=b1
    D=A@B
    for lane in range(32):
        g,t=lane//4,lane%4
        acc[lane]+=np.array([D[g,2*t],D[g,2*t+1],D[g+8,2*t],D[g+8,2*t+1]])
nblocks=(rows+15)//16
for rb in range(nblocks):
    r0=rb*16
    red=np.zeros((WARPS,16,8))
    rounds=(k+TC_COLS-1)//TC_COLS
    for warp in range(WARPS):
        acc=np.zeros((32,4))
        for q in range(warp,rounds,WARPS):
            A1=[];A2=[];B1=[];B2=[]
            for lane in range(32):
                g,t=lane//4,lane%4
                c=q*TC_COLS+8*t
                def row(r):
                    return W[r,c:c+8] if (c<k and r<rows) else np.zeros(8)
                lo=row(r0+g); hi=row(r0+g+8)
                xv=X[g,c:c+8] if (c<k and g<nt) else np.zeros(8)
                # words: .x=(0,1) .y=(2,3) .z=(4,5) .w=(6,7)
                A1.append((lo[0:2],hi[0:2],lo[2:4],hi[2:4])); B1.append((xv[0:2],xv[2:4]))
                A2.append((lo[4:6],hi[4:6],lo[6:8],hi[6:8])); B2.append((xv[4:6],xv[6:8]))
            mma(acc,A1,B1); mma(acc,A2,B2)
        for lane in range(32):
            g,t=lane//4,lane%4
            red[warp,g,2*t]=acc[lane,0]; red[warp,g,2*t+1]=acc[lane,1]
            red[warp,g+8,2*t]=acc[lane,2]; red[warp,g+8,2*t+1]=acc[lane,3]
    for tid in range(128):
        i,tok=tid//8,tid%8
        r=r0+i
        if tok<nt and r<rows: Y[tok,r]=red[:,i,tok].sum()
ref=X@W.T
err = np.abs(Y-ref).max()
print("max abs err", err)
raise SystemExit(0 if err < 1e-9 else 1)
