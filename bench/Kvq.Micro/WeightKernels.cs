using BenchmarkDotNet.Attributes;
using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Micro;

/// <summary>
/// Weight products per ggml type at books-19m's projection shape (rows x cols): MatVec (decode, one token) and
/// MatMul (batched prefill, 1024 tokens), on one thread.
/// </summary>
[MemoryDiagnoser(false)]
public class WeightKernels
{
    [Params(GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0)]
    public GgmlType Type { get; set; } = GgmlType.Q8_0;

    public int Rows { get; set; } = 1024;
    public int Cols { get; set; } = 384;
    public int Tokens { get; set; } = 1024;

    private WeightMatrix _w = null!;
    private float[] _x = null!, _y = null!;
    private readonly Parallelism _par = new(1);

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(5);
        var values = new float[Rows * Cols];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() - 0.5);
        if (Type == GgmlType.F32) _w = WeightMatrix.FromFloats("w", Rows, Cols, values);
        else if (Type == GgmlType.F16)
        {
            var halves = values.Select(v => (Half)v).ToArray();
            _w = WeightMatrix.FromBytes("w", Rows, Cols, Type, System.Runtime.InteropServices.MemoryMarshal.AsBytes(halves.AsSpan()));
        }
        else
        {
            var bytes = new byte[GgmlTypeInfo.RowBytes(Type, Cols) * Rows];
            QuantFormats.Quantize(Type, values, bytes);
            _w = WeightMatrix.FromBytes("w", Rows, Cols, Type, bytes);
        }
        _x = new float[Tokens * Cols];
        for (int i = 0; i < _x.Length; i++) _x[i] = (float)(rng.NextDouble() - 0.5);
        _y = new float[Tokens * Rows];
    }

    [Benchmark]
    public float MatVec()
    {
        _w.MatVec(_x.AsSpan(0, Cols), _y.AsSpan(0, Rows), _par);
        return _y[0];
    }

    [Benchmark]
    public float MatMul()
    {
        _w.MatMul(_x, _y, Tokens, _par);
        return _y[0];
    }
}
