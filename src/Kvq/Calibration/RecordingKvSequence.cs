using Kvq.Cache;
using Kvq.Tensors;

namespace Kvq.Calibration;

/// <summary>
/// A plain f32 cache that also copies each appended token's pre-RoPE keys and values (positions &gt;= sink) into
/// calibration buffers, per layer, starting at row <paramref name="firstRow"/>.
/// </summary>
internal sealed class RecordingKvSequence(KvShape shape, int capacity, int sink, float[][] keys, float[][] values, int firstRow)
    : IKvSequence
{
    private readonly DenseF32Sequence _inner = new(shape, capacity);

    public int Length => _inner.Length;

    public void BeginChunk(ReadOnlySpan<int> tokens) => _inner.BeginChunk(tokens);

    public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n)
    {
        int kvDim = shape.KvDim, pos0 = _inner.Length;
        for (int t = 0; t < n; t++)
        {
            int pos = pos0 + t;
            if (pos < sink) continue;
            int row = firstRow + pos - sink;
            k.Slice(t * kvDim, kvDim).CopyTo(keys[layer].AsSpan(row * kvDim, kvDim));
            v.Slice(t * kvDim, kvDim).CopyTo(values[layer].AsSpan(row * kvDim, kvDim));
        }
        _inner.Append(layer, k, v, n);
    }

    public void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par) =>
        _inner.Attend(layer, q, n, output, par);

    public void Commit(int n) => _inner.Commit(n);
}
