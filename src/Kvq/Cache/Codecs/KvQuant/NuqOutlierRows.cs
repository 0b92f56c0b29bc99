using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>What the nuq codecs do with a block's sparse rows (<see cref="BlockOutliers"/>) beyond encoding them.</summary>
internal static class NuqOutlierRows
{
    /// <summary>Overwrites the decoded (count, headDim) rows with the exact outliers of their tokens.</summary>
    public static void Apply(BlockOutliers outliers, int count, int headDim, Span<float> dst)
    {
        int n = outliers.Count, limit = count * headDim;
        for (int i = 0; i < n; i++)
        {
            var (index, h) = outliers.Entry(i);
            if (index >= limit) break;   // sorted: the rest belong to tokens past count
            dst[index] = QuantFormats.HalfToSingle(h);
        }
    }

    /// <summary>Gives token <paramref name="dstSlot"/> of <paramref name="dst"/> the outliers of token
    /// <paramref name="srcSlot"/> of <paramref name="src"/> (the same list or another).</summary>
    public static void CopyToken(BlockOutliers src, int srcSlot, BlockOutliers dst, int dstSlot, int headDim, int indexBits)
    {
        Span<int> channels = stackalloc int[headDim];
        Span<ushort> halves = stackalloc ushort[headDim];
        int a = src.LowerBound(srcSlot * headDim), b = src.LowerBound((srcSlot + 1) * headDim);
        for (int i = a; i < b; i++)
        {
            var (index, h) = src.Entry(i);
            channels[i - a] = index - srcSlot * headDim;
            halves[i - a] = h;
        }
        dst.SetToken(dstSlot, headDim, indexBits, channels[..(b - a)], halves[..(b - a)]);
    }
}
