using System.Numerics.Tensors;

namespace Kvq.Cache.Storage;

/// <summary>
/// Exact (f16) copies of the first tokens of a sequence, per layer and KV head: attention sinks draw most of the
/// attention mass, so KVQuant keeps them unquantized. Attention reads these rows instead of the encoded ones.
/// </summary>
public sealed class SinkStore(int layers, int kvHeads, int headDim, int tokens)
{
    private readonly Half[] _data = new Half[layers * kvHeads * tokens * headDim];   // (layer, head, token, dim)
    public int Tokens => tokens;
    public long AllocatedBytes => _data.Length * 2L;

    private int Offset(int layer, int head, int token) => ((layer * kvHeads + head) * tokens + token) * headDim;

    public void Set(int layer, int head, int token, ReadOnlySpan<float> x) =>
        TensorPrimitives.ConvertToHalf(x, _data.AsSpan(Offset(layer, head, token), headDim));

    /// <summary>Replaces the first min(Tokens, count) rows of a decoded tile of the sequence's first block.</summary>
    public void Overwrite(int layer, int head, Span<float> tile, int count)
    {
        int n = Math.Min(tokens, count);
        Tensors.Quant.HalfDot.ToSingle(_data.AsSpan(Offset(layer, head, 0), n * headDim), tile[..(n * headDim)]);
    }

    public void CopyFrom(SinkStore other) => other._data.CopyTo(_data, 0);

    public Half[] Save() => (Half[])_data.Clone();

    public void Restore(Half[] saved) => saved.CopyTo(_data, 0);
}
