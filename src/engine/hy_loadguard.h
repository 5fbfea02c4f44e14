/* hy_loadguard: while armed for a model file, libllama's loader maps it
 * without MAP_POPULATE and without WILLNEED advice, so loading a streamed model
 * reads only what stays resident (see hy_loadguard.c for why and how). One
 * model load at a time; arm right before llama_model_load_from_file and disarm
 * right after. */
#ifndef HY_LOADGUARD_H
#define HY_LOADGUARD_H

#include <stdbool.h>

void hy_loadguard_arm(const char *path);
/* returns how many hints were dropped */
unsigned long hy_loadguard_disarm(void);

#endif
