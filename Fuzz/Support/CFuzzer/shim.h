// libFuzzer's driver, for a fuzz target that has its own main (SwiftPM gives every executable one): it parses
// libFuzzer's command line and calls `UserCb` with each input. Linked by `-sanitize=fuzzer`.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));
