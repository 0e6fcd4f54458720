// Generation loop shared by `kiln run`, `kiln chat` and the bench (the
// public kiln_generate in kiln.h): feed the prompt, sample, stream complete
// UTF-8 text, stop at end-of-generation tokens, stop strings or the token
// limit.
#ifndef KILN_RUNTIME_GENERATE_H
#define KILN_RUNTIME_GENERATE_H

#include "runtime/session.h"


#endif
