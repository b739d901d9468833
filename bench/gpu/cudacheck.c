/* cudacheck: a real CUDA computation with no CUDA headers or toolkit. It loads the
 * driver (libcuda.so.1) with dlopen, JIT-compiles a hand-written PTX vector add, runs
 * it on N floats and checks every element on the CPU. Exit 0: the GPU computed the
 * right answer; 2: no driver library; 3: a CUDA call failed; 4: wrong results. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;

static const char PTX[] =
    ".version 7.0\n"
    ".target sm_75\n"
    ".address_size 64\n"
    ".visible .entry vadd(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u32 pn)\n"
    "{\n"
    "  .reg .pred %p<2>;\n  .reg .b32 %r<6>;\n  .reg .f32 %f<4>;\n  .reg .b64 %rd<11>;\n"
    "  ld.param.u64 %rd1, [pa];\n  ld.param.u64 %rd2, [pb];\n  ld.param.u64 %rd3, [pc];\n"
    "  ld.param.u32 %r2, [pn];\n"
    "  mov.u32 %r3, %ctaid.x;\n  mov.u32 %r4, %ntid.x;\n  mov.u32 %r5, %tid.x;\n"
    "  mad.lo.s32 %r1, %r3, %r4, %r5;\n"
    "  setp.ge.u32 %p1, %r1, %r2;\n  @%p1 bra DONE;\n"
    "  cvta.to.global.u64 %rd4, %rd1;\n  cvta.to.global.u64 %rd5, %rd2;\n"
    "  cvta.to.global.u64 %rd6, %rd3;\n  mul.wide.u32 %rd7, %r1, 4;\n"
    "  add.s64 %rd8, %rd4, %rd7;\n  add.s64 %rd9, %rd5, %rd7;\n  add.s64 %rd10, %rd6, %rd7;\n"
    "  ld.global.f32 %f1, [%rd8];\n  ld.global.f32 %f2, [%rd9];\n"
    "  add.f32 %f3, %f1, %f2;\n  st.global.f32 [%rd10], %f3;\n"
    "DONE:\n  ret;\n}\n";

static void *lib;
static CUresult (*p_cuGetErrorString)(CUresult, const char **);

static void *sym(const char *name) {
    void *f = dlsym(lib, name);
    if (!f) {
        fprintf(stderr, "cudacheck: libcuda.so.1 has no %s\n", name);
        exit(3);
    }
    return f;
}

static void check(CUresult r, const char *what) {
    if (r != 0) {
        const char *s = "?";
        if (p_cuGetErrorString) p_cuGetErrorString(r, &s);
        fprintf(stderr, "cudacheck: %s failed: %d (%s)\n", what, r, s);
        exit(3);
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], 0, 10) : (1u << 26);
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "cudacheck: libcuda.so.1 not loadable: %s\n", dlerror());
        return 2;
    }
    p_cuGetErrorString = (CUresult(*)(CUresult, const char **))sym("cuGetErrorString");
    CUresult (*cuInit)(unsigned) = sym("cuInit");
    CUresult (*cuDriverGetVersion)(int *) = sym("cuDriverGetVersion");
    CUresult (*cuDeviceGetCount)(int *) = sym("cuDeviceGetCount");
    CUresult (*cuDeviceGet)(CUdevice *, int) = sym("cuDeviceGet");
    CUresult (*cuDeviceGetName)(char *, int, CUdevice) = sym("cuDeviceGetName");
    CUresult (*cuDeviceTotalMem)(size_t *, CUdevice) = sym("cuDeviceTotalMem_v2");
    CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice) = sym("cuDeviceGetAttribute");
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice) = sym("cuDevicePrimaryCtxRetain");
    CUresult (*cuCtxSetCurrent)(CUcontext) = sym("cuCtxSetCurrent");
    CUresult (*cuModuleLoadData)(CUmodule *, const void *) = sym("cuModuleLoadData");
    CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *) = sym("cuModuleGetFunction");
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t) = sym("cuMemAlloc_v2");
    CUresult (*cuMemFree)(CUdeviceptr) = sym("cuMemFree_v2");
    CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t) = sym("cuMemcpyHtoD_v2");
    CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t) = sym("cuMemcpyDtoH_v2");
    CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                               unsigned, unsigned, CUstream, void **, void **) = sym("cuLaunchKernel");
    CUresult (*cuCtxSynchronize)(void) = sym("cuCtxSynchronize");

    int version = 0, count = 0, major = 0, minor = 0, sms = 0;
    check(cuInit(0), "cuInit");
    check(cuDriverGetVersion(&version), "cuDriverGetVersion");
    check(cuDeviceGetCount(&count), "cuDeviceGetCount");
    printf("cudacheck: CUDA driver API %d.%d, %d device(s)\n", version / 1000, version % 1000 / 10, count);
    if (count < 1) return 3;
    CUdevice dev;
    char name[256] = {0};
    size_t mem = 0;
    check(cuDeviceGet(&dev, 0), "cuDeviceGet");
    check(cuDeviceGetName(name, sizeof name, dev), "cuDeviceGetName");
    check(cuDeviceTotalMem(&mem, dev), "cuDeviceTotalMem");
    check(cuDeviceGetAttribute(&major, 75, dev), "compute capability major");
    check(cuDeviceGetAttribute(&minor, 76, dev), "compute capability minor");
    check(cuDeviceGetAttribute(&sms, 16, dev), "multiprocessor count");
    printf("cudacheck: device 0: %s, %zu MiB, compute capability %d.%d, %d SMs\n", name,
           mem >> 20, major, minor, sms);
    CUcontext ctx;
    check(cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
    check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
    CUmodule mod;
    CUfunction fn;
    check(cuModuleLoadData(&mod, PTX), "cuModuleLoadData (PTX JIT)");
    check(cuModuleGetFunction(&fn, mod, "vadd"), "cuModuleGetFunction");

    size_t bytes = (size_t)n * sizeof(float);
    float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
    if (!a || !b || !c) return 3;
    for (unsigned i = 0; i < n; i++) {
        a[i] = (float)i;
        b[i] = (float)(2u * i % 1000003u) * 0.5f;
        c[i] = -1.0f;
    }
    CUdeviceptr da, db, dc;
    check(cuMemAlloc(&da, bytes), "cuMemAlloc a");
    check(cuMemAlloc(&db, bytes), "cuMemAlloc b");
    check(cuMemAlloc(&dc, bytes), "cuMemAlloc c");
    check(cuMemcpyHtoD(da, a, bytes), "copy a to the GPU");
    check(cuMemcpyHtoD(db, b, bytes), "copy b to the GPU");
    void *args[] = {&da, &db, &dc, &n};
    unsigned threads = 256, blocks = (n + threads - 1) / threads;
    check(cuLaunchKernel(fn, blocks, 1, 1, threads, 1, 1, 0, 0, args, 0), "cuLaunchKernel");
    check(cuCtxSynchronize(), "cuCtxSynchronize (warm-up)");
    int reps = 20;
    double t0 = now();
    for (int r = 0; r < reps; r++)
        check(cuLaunchKernel(fn, blocks, 1, 1, threads, 1, 1, 0, 0, args, 0), "cuLaunchKernel");
    check(cuCtxSynchronize(), "cuCtxSynchronize");
    double dt = (now() - t0) / reps;
    check(cuMemcpyDtoH(c, dc, bytes), "copy c from the GPU");
    unsigned bad = 0, first = 0;
    for (unsigned i = 0; i < n; i++) {
        float want = a[i] + b[i];
        if (memcmp(&want, &c[i], sizeof(float)) != 0 && bad++ == 0) first = i;
    }
    cuMemFree(da);
    cuMemFree(db);
    cuMemFree(dc);
    if (bad) {
        printf("cudacheck: FAIL: %u of %u sums wrong, first at %u: %g + %g gave %g\n", bad, n,
               first, a[first], b[first], c[first]);
        return 4;
    }
    printf("cudacheck: PASS: %u float sums computed on the GPU, all equal to the CPU's\n", n);
    printf("cudacheck: vadd kernel %.3f ms per launch (mean of %d), %.0f GB/s moved\n", dt * 1e3,
           reps, 3.0 * bytes / dt / 1e9);
    return 0;
}
