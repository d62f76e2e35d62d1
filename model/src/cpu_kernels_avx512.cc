// cpu_kernels_isa.inc at 16 floats a vector; CMake compiles this file alone with -mavx512f -mfma.
#define CMN_KERNEL_ISA avx512
#define CMN_KERNEL_WIDTH 16
#define CMN_KERNEL_NAME "avx512"
#include "cpu_kernels_isa.inc"
