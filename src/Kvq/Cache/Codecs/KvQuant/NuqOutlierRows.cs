using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>What the nuq codecs do with a block's sparse rows (<see cref="BlockOutliers"/>) beyond encoding them.</summary>
internal static class NuqOutlierRows
{
    /// <summary>Overwrites the decoded (count, headDim) rows with the exact outliers of their tokens.</summary>
    public static void Apply(BlockOutliers outliers, int count, int headDim, Span<float> dst)
    {
        int total = outliers.Count;
        if (total == 0) return;
        using var e = new Unpacked(total);
        int n = e.Read(outliers, count * headDim);   // sorted: the rest belong to tokens past count
        for (int i = 0; i < n; i++) dst[e.Index[i]] = e.Value[i];
    }

    /// <summary>A block's sparse rows unpacked for one attention call: indices (token * headDim + channel) and exact
    /// values as floats, on a per-thread buffer (no allocation per call). Dispose returns the buffer.</summary>
    public ref struct Unpacked
    {
        [ThreadStatic] private static int[]? _index;
        [ThreadStatic] private static ushort[]? _half;
        [ThreadStatic] private static float[]? _value;
        [ThreadStatic] private static bool _busy;
        private readonly bool _owns;
        public Span<int> Index;
        public Span<float> Value;
        private Span<ushort> _h;

        /// <summary>Room for <paramref name="capacity"/> entries.</summary>
        public Unpacked(int capacity)
        {
            if (_busy)
            {
                // Re-entered on this thread (not done by the kernels, but kept correct): a private buffer.
                Index = new int[capacity];
                Value = new float[capacity];
                _h = new ushort[capacity];
                return;
            }
            _busy = _owns = true;
            if (_index == null || _index.Length < capacity)
            {
                int n = Math.Max(capacity, 1024);
                _index = new int[n];
                _half = new ushort[n];
                _value = new float[n];
            }
            Index = _index;
            Value = _value!;
            _h = _half!;
        }

        /// <summary>Unpacks the entries below <paramref name="limit"/> and returns how many.</summary>
        public readonly int Read(BlockOutliers outliers, int limit)
        {
            int n = outliers.Unpack(limit, Index, _h);
            for (int i = 0; i < n; i++) Value[i] = QuantFormats.HalfToSingle(_h[i]);
            return n;
        }

        [ThreadStatic] private static byte[]? _slotChannels;
        [ThreadStatic] private static float[]? _slotValues;

        /// <summary>The first <paramref name="n"/> unpacked entries as per-token slots for the fused kernels' lane blends:
        /// slots = the most entries any of the <paramref name="count"/> tokens has; token t's entries fill slots
        /// t*slots.. in channel order, the rest hold <see cref="NuqKernels.EmptySlot"/>. Returns slots (0 without
        /// entries); the spans live on a per-thread buffer until the next call on this thread.</summary>
        public readonly int ToSlots(int n, int count, int headDim, out Span<byte> channels, out Span<float> values)
        {
            channels = default;
            values = default;
            if (n == 0) return 0;
            int slots = 0, run = 0, last = -1, shift = TokenShift(headDim);
            for (int i = 0; i < n; i++)
            {
                int t = shift >= 0 ? Index[i] >> shift : Index[i] / headDim;
                run = t == last ? run + 1 : 1;
                last = t;
                slots = Math.Max(slots, run);
            }
            int size = count * slots;
            if (_slotChannels == null || _slotChannels.Length < size)
            {
                _slotChannels = new byte[Math.Max(size, 2048)];
                _slotValues = new float[Math.Max(size, 2048)];
            }
            channels = _slotChannels.AsSpan(0, size);
            values = _slotValues.AsSpan(0, size);
            channels.Fill(NuqKernels.EmptySlot);
            last = -1;
            int at = 0;
            for (int i = 0; i < n; i++)
            {
                int t = shift >= 0 ? Index[i] >> shift : Index[i] / headDim, c = Index[i] - t * headDim;
                at = t == last ? at + 1 : t * slots;
                last = t;
                channels[at] = (byte)c;
                values[at] = Value[i];
            }
            return slots;
        }

        /// <summary>log2 of a power-of-two head dim (an entry's token is then its index shifted right), else -1.</summary>
        public static int TokenShift(int headDim) =>
            (headDim & (headDim - 1)) == 0 ? System.Numerics.BitOperations.TrailingZeroCount(headDim) : -1;

        public void Dispose()
        {
            if (_owns) _busy = false;
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
