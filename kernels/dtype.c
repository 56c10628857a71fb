/* Names and sizes of the element types (kernels/dtype.h). */
#include "kernels/dtype.h"

const char *an_dtype_name(an_dtype t) {
    switch (t) {
    case AN_F32: return "F32";
    case AN_F16: return "F16";
    case AN_BF16: return "BF16";
    case AN_F64: return "F64";
    case AN_I8: return "I8";
    case AN_U8: return "U8";
    case AN_I16: return "I16";
    case AN_I32: return "I32";
    case AN_I64: return "I64";
    case AN_BOOL: return "BOOL";
    case AN_NF4: return "NF4";
    }
    return "?";
}

size_t an_dtype_size(an_dtype t) {
    switch (t) {
    case AN_F64: case AN_I64: return 8;
    case AN_F32: case AN_I32: return 4;
    case AN_F16: case AN_BF16: case AN_I16: return 2;
    case AN_I8: case AN_U8: case AN_BOOL: return 1;
    case AN_NF4: return 0;
    }
    return 0;
}
