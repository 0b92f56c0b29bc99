using Kvq.Cuda.Model;
using Xunit.Abstractions;

namespace Kvq.Cuda.Tests;

/// <summary>
/// model.cu gemv_f16 (ModelKernels.Gemv), a decode step's one-row product with the element-wise work around it,
/// against the path it replaces: RMSNorm / SwiGLU to f16, cuBLAS, the residual add. Odd row counts, a matrix that is
/// rows of a stacked one (an offset into its buffer), widths from books-19m's to the 7B shape's.
/// </summary>
public class GemvGpuTests(ITestOutputHelper output)
{
    [GpuTheory]
    [InlineData(37, 384)]
    [InlineData(640, 384)]
    [InlineData(1531, 1000)]
    [InlineData(4100, 4096)]
    public void FusedProductsMatchNormThenCublas(int rows, int cols)
    {
        using var ctx = CudaContext.Create();
        var loader = new KernelLoader(ctx);
        using var kernels = new ModelKernels(loader);
        using var blas = new CublasHandle(ctx);
        int seed = rows * 31 + cols;
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        float R(float s = 1f) => (float)(rng.NextDouble() * 2 - 1) * s;
        // The matrix under test is rows [5, 5 + rows) of a larger one: a view at an offset, as Wq of the stacked q/k/v.
        var wh = Enumerable.Range(0, (rows + 9) * cols).Select(_ => (Half)R(0.05f)).ToArray();
        using var whole = new DeviceMatrix(ctx, rows + 9, cols, CudaWeightType.F16);
        whole.Buffer.CopyFrom(wh);
        var w = whole.Slice(5, rows);
        var x = Enumerable.Range(0, cols).Select(_ => R(2f)).ToArray();
        var x2 = Enumerable.Range(0, cols).Select(_ => R(2f)).ToArray();
        var nw = Enumerable.Range(0, cols).Select(_ => 0.5f + R(0.4f)).ToArray();
        var y0 = Enumerable.Range(0, rows).Select(_ => R(3f)).ToArray();
        using var dx = ctx.Upload(x);
        using var dx2 = ctx.Upload(x2);
        using var dnw = ctx.Upload(nw);
        using var xh = ctx.Upload(x.Select(v => (Half)v).ToArray());
        using var yh = ctx.Allocate(cols * 2L);
        using var yRef = ctx.Allocate(rows * 4L);
        using var yGot = ctx.Allocate(rows * 4L);
        const float eps = 1e-5f;
        int sms = ctx.Device.Multiprocessors;

        // f16 input.
        w.Apply(blas, xh.Pointer, yRef.Pointer, 1);
        kernels.Gemv(w, GemvInput.F16, xh.Pointer, 0, null, 0, yGot.Pointer, residual: false, sms);
        Close("f16 input", yRef.Download<float>(rows), yGot.Download<float>(rows));

        // RMSNorm of an f32 row.
        kernels.RmsNorm(dx.Pointer, dnw, 1, cols, eps, 0, yh.Pointer);
        w.Apply(blas, yh.Pointer, yRef.Pointer, 1);
        kernels.Gemv(w, GemvInput.Norm, dx.Pointer, 0, dnw, eps, yGot.Pointer, residual: false, sms);
        Close("norm", yRef.Download<float>(rows), yGot.Download<float>(rows));

        // SwiGLU of gate and up, added into a residual row.
        kernels.SwiGluF16(dx.Pointer, dx2.Pointer, yh.Pointer, cols);
        w.Apply(blas, yh.Pointer, yRef.Pointer, 1);
        var want = yRef.Download<float>(rows).Select((v, i) => y0[i] + v).ToArray();
        yGot.CopyFrom(y0);
        kernels.Gemv(w, GemvInput.SwiGlu, dx.Pointer, dx2.Pointer, null, 0, yGot.Pointer, residual: true, sms);
        Close("swiglu + residual", want, yGot.Download<float>(rows));
        // The rows around the view are not written.
        Assert.Equal(wh[..(5 * cols)], whole.Buffer.Download<Half>(5 * cols));
    }

    private void Close(string what, float[] want, float[] got)
    {
        double num = 0, den = 0, max = 0;
        for (int i = 0; i < want.Length; i++)
        {
            double d = want[i] - got[i];
            num += d * d;
            den += (double)want[i] * want[i];
            max = Math.Max(max, Math.Abs(d));
        }
        double rel = Math.Sqrt(num / den);
        output.WriteLine($"{what}: rel L2 {rel:E2}, max abs {max:E2}");
        Assert.True(rel < 1e-5, $"{what}: rel L2 {rel:E2} vs cuBLAS");
    }

    [Fact]
    public void TakesWidthsWhoseRowFitsBesideTheNormsStaticSharedMemory()
    {
        // The staged row (f16) and block_sum's 32 floats must fit 48 KiB of shared memory: widths are multiples of 8.
        Assert.True(ModelKernels.GemvFits(384) && ModelKernels.GemvFits(11008) && ModelKernels.GemvFits(ModelKernels.GemvMaxCols));
        Assert.True(ModelKernels.GemvMaxCols * 2 + 32 * 4 <= 48 * 1024);
        Assert.False(ModelKernels.GemvFits(ModelKernels.GemvMaxCols + 8));
        Assert.False(ModelKernels.GemvFits(0) || ModelKernels.GemvFits(12) || ModelKernels.GemvFits(390));
    }

    [GpuFact]
    public void RejectsMatricesItCannotStage()
    {
        using var ctx = CudaContext.Create();
        using var kernels = new ModelKernels(new KernelLoader(ctx));
        using var odd = new DeviceMatrix(ctx, 4, 12, CudaWeightType.F16);
        using var f32 = new DeviceMatrix(ctx, 4, 16, CudaWeightType.F32);
        Assert.Throws<ArgumentException>(() => kernels.Gemv(odd, GemvInput.F16, 0, 0, null, 0, 0, false, 1));
        Assert.Throws<ArgumentException>(() => kernels.Gemv(f32, GemvInput.F16, 0, 0, null, 0, 0, false, 1));
    }
}
