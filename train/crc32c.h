#ifndef AN_CRC32C_H
#define AN_CRC32C_H
/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord and TensorBoard event files use. */
#include <stddef.h>
#include <stdint.h>

/* Continues a CRC: crc = an_crc32c_update(0, a, na); crc = an_crc32c_update(crc, b, nb); */
uint32_t an_crc32c_update(uint32_t crc, const void *data, size_t n);
uint32_t an_crc32c(const void *data, size_t n);
/* TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8, so a CRC of data holding CRCs
 * does not degenerate. */
uint32_t an_crc32c_masked(const void *data, size_t n);

#endif
