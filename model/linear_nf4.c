/* QLoRA's frozen base: is any linear weight NF4 (model/nf4_weights.h quantizes and stores them). */
#include "model/lora.h"

int an_model_is_quantized(const an_model *m) {
    for (int i = 0; i < m->n_params; i++)
        if (an_param_nf4(&m->params[i])) return 1;
    return 0;
}
