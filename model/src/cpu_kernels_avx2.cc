// cpu_kernels_isa.inc at 8 floats a vector; CMake compiles this file alone with -mavx2 -mfma.
#define CMN_KERNEL_ISA avx2
#define CMN_KERNEL_WIDTH 8
#define CMN_KERNEL_NAME "avx2"
#include "cpu_kernels_isa.inc"
