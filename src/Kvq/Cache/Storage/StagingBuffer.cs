using System.Numerics.Tensors;

namespace Kvq.Cache.Storage;

/// <summary>
/// Recent tokens of one layer that a whole-block codec has not encoded yet, in f16, (kvHeads, capacity, headDim).
/// Tokens [First, First + Count) of the sequence; the oldest block leaves when it is encoded.
/// </summary>
public sealed class StagingBuffer(int kvHeads, int headDim, int capacityTokens)
{
    private readonly Half[] _data = new Half[kvHeads * capacityTokens * headDim];
    public int Count { get; private set; }
    public long AllocatedBytes => _data.Length * 2L;

    public void Add(int head, int index, ReadOnlySpan<float> x) =>
        TensorPrimitives.ConvertToHalf(x, _data.AsSpan((head * capacityTokens + index) * headDim, headDim));

    public void SetCount(int n) => Count = n;

    /// <summary>A copy of the staged tokens (swap out); <see cref="Restore"/> puts them back.</summary>
    public (Half[] Data, int Count) Save() => ((Half[])_data.Clone(), Count);

    public void Restore((Half[] Data, int Count) saved)
    {
        saved.Data.CopyTo(_data, 0);
        Count = saved.Count;
    }

    public void Read(int head, int first, int count, Span<float> dst) =>
        Tensors.Quant.HalfDot.ToSingle(_data.AsSpan((head * capacityTokens + first) * headDim, count * headDim), dst);

    /// <summary>Drops the oldest <paramref name="n"/> tokens of every head.</summary>
    public void DropFront(int n)
    {
        for (int h = 0; h < kvHeads; h++)
        {
            var row = _data.AsSpan(h * capacityTokens * headDim, capacityTokens * headDim);
            row.Slice(n * headDim, (Count - n) * headDim).CopyTo(row);
        }
        Count -= n;
    }
}
