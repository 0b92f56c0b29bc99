using Kvq.Cuda;
using Kvq.Cuda.Attention;

namespace Kvq.KernelLab;

/// <summary>
/// LLaMA-7B-shaped weights made on the device (f16, random, per layer: fused QKV 12288 x 4096, output 4096 x 4096,
/// fused gate/up 22016 x 4096, down 4096 x 11008; LM head 32000 x 4096) and the matrix-vector products of one
/// decode token through cuBLAS. RMSNorm, RoPE, SwiGLU and the residual adds are not run (elementwise over 4096 or
/// 11008 values per layer, microseconds against milliseconds).
/// </summary>
public sealed class SevenB : IDisposable
{
    public const int Dim = 4096, Ffn = 11008, Vocab = 32000;
    private readonly List<DeviceBuffer> _bufs = new();
    private readonly DeviceBuffer[] _qkv, _o, _gu, _down;
    private readonly DeviceBuffer _lm, _x, _xf, _y;
    private readonly CublasHandle _blas;
    public long WeightBytes { get; }

    public SevenB(DecodeKernels k, CublasHandle blas, int layers)
    {
        _blas = blas;
        _qkv = new DeviceBuffer[layers]; _o = new DeviceBuffer[layers]; _gu = new DeviceBuffer[layers]; _down = new DeviceBuffer[layers];
        for (int l = 0; l < layers; l++)
        {
            _qkv[l] = Random(k, 3 * Dim, Dim, 100u + (uint)l);
            _o[l] = Random(k, Dim, Dim, 200u + (uint)l);
            _gu[l] = Random(k, 2 * Ffn, Dim, 300u + (uint)l);
            _down[l] = Random(k, Dim, Ffn, 400u + (uint)l);
        }
        _lm = Random(k, Vocab, Dim, 500u);
        WeightBytes = _bufs.Sum(b => b.Bytes);
        _x = Random(k, 1, Dim, 600u);
        _xf = Random(k, 1, Ffn, 601u);
        _y = Track(k.Context.Allocate((long)Vocab * 4));
        k.Context.Synchronize();
    }

    private DeviceBuffer Track(DeviceBuffer b)
    {
        _bufs.Add(b);
        return b;
    }

    /// <summary>rows x cols f16 values of the synthetic source, scaled by its generator (magnitude ~1).</summary>
    private DeviceBuffer Random(DecodeKernels k, int rows, int cols, uint seed)
    {
        long n = (long)rows * cols;
        var b = Track(k.Context.Allocate(n * 2));
        using var a = new KernelArgs();
        a.Add(seed).Add(1).Add(0L).Add(n / 128).Add(n / 128).Add(0).Add(0.0).Add(b);
        k.WriteF16().Launch(LaunchShape.Grid1((n + 255) / 256, 256), a);
        return b;
    }

    /// <summary>The decode token's products for layer <paramref name="l"/> (QKV, output, gate/up, down).</summary>
    public void Layer(int l)
    {
        _blas.Linear(_x, _qkv[l], _y, 1, Dim, 3 * Dim);
        _blas.Linear(_x, _o[l], _y, 1, Dim, Dim);
        _blas.Linear(_x, _gu[l], _y, 1, Dim, 2 * Ffn);
        _blas.Linear(_xf, _down[l], _y, 1, Ffn, Dim);
    }

    public void Head() => _blas.Linear(_x, _lm, _y, 1, Dim, Vocab);

    /// <summary>A small product against the CPU in double: relative L2 error.</summary>
    public static double CheckLinear(DecodeKernels k, CublasHandle blas)
    {
        const int rows = 3, kk = 512, outF = 384;
        var rng = new Random(3);
        var x = new Half[rows * kk];
        var w = new Half[outF * kk];
        for (int i = 0; i < x.Length; i++) x[i] = (Half)(rng.NextDouble() * 2 - 1);
        for (int i = 0; i < w.Length; i++) w[i] = (Half)(rng.NextDouble() * 2 - 1);
        using var xd = k.Context.Upload(x);
        using var wd = k.Context.Upload(w);
        using var yd = k.Context.Allocate(rows * outF * 4);
        blas.Linear(xd, wd, yd, rows, kk, outF);
        k.Context.Synchronize();
        var y = yd.Download<float>(rows * outF);
        double num = 0, den = 0;
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outF; o++)
            {
                double s = 0;
                for (int i = 0; i < kk; i++) s += (double)x[r * kk + i] * (double)w[o * kk + i];
                num += (y[r * outF + o] - s) * (y[r * outF + o] - s);
                den += s * s;
            }
        return Math.Sqrt(num / den);
    }

    public void Dispose()
    {
        foreach (var b in _bufs) b.Dispose();
        _bufs.Clear();
    }
}
