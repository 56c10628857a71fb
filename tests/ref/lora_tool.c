/* Helper for tests/ref/check_peft_compat.py (not part of make test):
 *
 *   lora_tool train MODEL ADAPTER_OUT TARGET...   a fresh adapter (r 4, alpha 8, seed 5) on TARGETs,
 *                                                 5 AdamW steps on a fixed random batch, saved
 *   lora_tool logits MODEL ADAPTER OUT.f32 ID...  float32 logits [n_ids, V] of one row with the adapter
 *                                                 (ADAPTER "-": none)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "model/lora.h"
#include "train/lora_step.h"

static int die(const an_error *e) {
    fprintf(stderr, "lora_tool: %s\n", e->msg);
    return 1;
}

int main(int argc, char **argv) {
    an_error e;
    if (argc < 4) {
        fprintf(stderr, "usage: lora_tool train MODEL OUT TARGET... | logits MODEL ADAPTER OUT.f32 ID...\n");
        return 2;
    }
    an_model *m = an_model_load(argv[2], an_ops_cpu(), &e);
    if (!m) return die(&e);
    if (!strcmp(argv[1], "train")) {
        an_lora_config c = an_lora_config_default();
        c.r = 4;
        c.alpha = 8;
        c.seed = 5;
        for (int i = 4; i < argc; i++)
            if (an_lora_config_add_target(&c, argv[i], &e)) return die(&e);
        enum { B = 2, T = 12 };
        if (an_lora_attach(m, &c, &e) || an_model_plan(m, B, T, &e)) return die(&e);
        snprintf(m->lora->base_model, sizeof m->lora->base_model, "%s", argv[2]);
        int32_t ids[B * T], tg[B * T];
        an_rng rng;
        an_rng_seed(&rng, 9);
        for (int i = 0; i < B * T; i++) ids[i] = 3 + (int32_t)an_rng_below(&rng, (uint64_t)m->cfg.vocab_size - 3);
        for (int i = 0; i < B * T; i++) tg[i] = i % T == T - 1 ? -100 : ids[i + 1];
        an_batch b = {ids, NULL, NULL, tg, B, T};
        an_lora_trainer tr;
        an_adamw_config opt = {1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
        if (an_lora_trainer_init(&tr, m, &e)) return die(&e);
        for (int s = 0; s < 5; s++) {
            an_step_stats st;
            if (an_lora_train_step(&tr, &b, &opt, &st, &e)) return die(&e);
        }
        an_lora_trainer_free(&tr);
        if (an_lora_save(m, argv[3], &e)) return die(&e);
    } else if (!strcmp(argv[1], "logits") && argc >= 6) {
        if (strcmp(argv[3], "-") && an_lora_load(m, argv[3], &e)) return die(&e);
        int n = argc - 5, V = m->cfg.vocab_size;
        int32_t *ids = malloc(sizeof *ids * n);
        for (int i = 0; i < n; i++) ids[i] = atoi(argv[5 + i]);
        float *logits = malloc(sizeof *logits * (size_t)n * V);
        an_batch b = {ids, NULL, NULL, NULL, 1, n};
        if (an_model_plan(m, 1, n, &e) || an_model_forward(m, &b, 0, 1.0f, NULL, logits, &e)) return die(&e);
        FILE *f = fopen(argv[4], "wb");
        if (!f || fwrite(logits, sizeof *logits, (size_t)n * V, f) != (size_t)n * V) return 1;
        fclose(f);
        free(ids);
        free(logits);
    } else {
        fprintf(stderr, "lora_tool: unknown mode %s\n", argv[1]);
        return 2;
    }
    an_model_free(m);
    return 0;
}
