// libkiln.so is made of the layer libraries (whole archives); CMake needs one
// source file of its own for the target.
typedef int kiln_libkiln_translation_unit;
