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
    case AN_Q8_0: return "Q8_0";
    case AN_Q4_0: return "Q4_0";
    case AN_Q4_1: return "Q4_1";
    case AN_Q4_K: return "Q4_K";
    case AN_Q6_K: return "Q6_K";
    case AN_Q8_0_X8: return "Q8_0x8";
    case AN_Q4_0_X8: return "Q4_0x8";
    case AN_Q4_1_X8: return "Q4_1x8";
    case AN_F32_X32: return "F32x32";
    }
    return "?";
}

size_t an_dtype_size(an_dtype t) {
    switch (t) {
    case AN_F64: case AN_I64: return 8;
    case AN_F32: case AN_I32: return 4;
    case AN_F16: case AN_BF16: case AN_I16: return 2;
    case AN_I8: case AN_U8: case AN_BOOL: return 1;
    case AN_NF4: case AN_Q8_0: case AN_Q4_0: case AN_Q4_1: case AN_Q4_K: case AN_Q6_K:
    case AN_Q8_0_X8: case AN_Q4_0_X8: case AN_Q4_1_X8: case AN_F32_X32: return 0;
    }
    return 0;
}

int an_dtype_block(an_dtype t) {
    switch (an_dtype_x8_base(t)) {
    case AN_Q8_0: case AN_Q4_0: case AN_Q4_1: return 32;
    case AN_Q4_K: case AN_Q6_K: return 256;
    case AN_F32_X32: return 1;
    default: return 0;
    }
}

int an_dtype_block_bytes(an_dtype t) {
    switch (an_dtype_x8_base(t)) {
    case AN_Q8_0: return 34;
    case AN_Q4_0: return 18;
    case AN_Q4_1: return 20;
    case AN_Q4_K: return 144;
    case AN_Q6_K: return 210;
    case AN_F32_X32: return 4;
    default: return 0;
    }
}
