// The library's version string (the rest of libkiln comes from the layers).
#include "kiln.h"

const char *kiln_version(void) { return "0.1.0"; }
