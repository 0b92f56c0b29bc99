using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs;

/// <summary>
/// The sparse part of one block of one KV head, kept beside the block's fixed bytes because its size depends on the
/// data (dense-and-sparse quantization keeps every element past a threshold exactly): a compressed sparse row list of
/// the block, entries sorted by (token, channel). Stored as bytes, all counted: u16 entry count, u8 index width w,
/// then per entry w bits of index (token * headDim + channel) and 16 bits of f16 value, bit-packed little-endian.
/// Rows are found by the token part of the sorted indices (no row-pointer array: one w-bit index per entry is cheaper
/// than a pointer per token at ~1 outlier per token). Writing a token replaces that token's entries, so tokens may be
/// written (and rewritten) in any order. Hand-written: no library keeps a bit-packed sparse list of this shape.
/// </summary>
public sealed class BlockOutliers
{
    private const int Header = 3;
    private static readonly byte[] Empty = [];
    private byte[] _data = Empty;
    private readonly OutlierBytes? _total;

    /// <summary>A list that reports its byte changes to <paramref name="total"/> (an arena's running sum), if given.</summary>
    public BlockOutliers(OutlierBytes? total = null) => _total = total;

    public int Count => _data.Length == 0 ? 0 : _data[0] | _data[1] << 8;
    public int IndexBits => _data.Length == 0 ? 0 : _data[2];
    /// <summary>Bytes held (the allocation: header and packed entries, rounded up to 8 bytes).</summary>
    public long Bytes => _data.Length;

    /// <summary>Asks for this list's object (its fields: where the rows are) in the cache, without reading it: the
    /// first of attention's two prefetch steps, two blocks ahead (<see cref="PrefetchRows"/> then reads the field).</summary>
    internal static unsafe void PrefetchObject(BlockOutliers rows)
    {
        if (Sse.IsSupported) Sse.Prefetch0((void*)Unsafe.As<BlockOutliers, nint>(ref rows));
    }

    /// <summary>Asks for the first <see cref="PrefetchedBytes"/> bytes of the packed rows in the cache, without reading
    /// them (a prefetch never faults, past the array's end included): attention's second prefetch step, one block
    /// ahead. Reads the <c>_data</c> field, so the object should have been prefetched a block earlier.</summary>
    internal unsafe void PrefetchRows()
    {
        if (!Sse.IsSupported) return;
        byte* p = (byte*)Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_data));
        for (int i = 0; i < PrefetchedBytes; i += 64) Sse.Prefetch0(p + i);
    }

    /// <summary>Bytes <see cref="PrefetchRows"/> asks for: a 32 x 64 block at ~1% holds ~20-70 entries of 27 bits.</summary>
    internal const int PrefetchedBytes = 256;

    /// <summary>Bits of the index part for a block of <paramref name="blockTokens"/> x <paramref name="headDim"/>.</summary>
    public static int IndexBitsFor(int blockTokens, int headDim)
    {
        long n = (long)blockTokens * headDim;
        int b = 1;
        while ((1L << b) < n) b++;
        if (b > 24) throw new ArgumentException($"a block of {blockTokens} x {headDim} values is too large for sparse outlier rows");
        return b;
    }

    /// <summary>Entry i: index (token * headDim + channel) and f16 bits of the value.</summary>
    public (int Index, ushort Half) Entry(int i)
    {
        int w = IndexBits;
        long bit = (long)i * (w + 16);
        ulong v = ReadBits(_data, Header * 8 + bit, w + 16);
        return ((int)(v & ((1UL << w) - 1)), (ushort)(v >> w));
    }

    /// <summary>Unpacks every entry whose index is below <paramref name="limit"/> (a prefix: entries are sorted) into
    /// <paramref name="index"/> and <paramref name="half"/> (room for <see cref="Count"/> entries) and returns how many:
    /// one 64-bit read per entry, for the attention kernels' per-block correction passes.</summary>
    public int Unpack(int limit, Span<int> index, Span<ushort> half)
    {
        int n = Count, w = IndexBits;
        if (n == 0) return 0;
        if (index.Length < n || half.Length < n)
            throw new ArgumentException($"room for {Math.Min(index.Length, half.Length)} outlier entries, the block holds {n}");
        var data = _data;
        ulong mask = (1UL << w) - 1;
        int width = w + 16;
        long bit = Header * 8;
        for (int i = 0; i < n; i++, bit += width)
        {
            ulong v = ReadBits(data, bit, width);
            int ix = (int)(v & mask);
            if (ix >= limit) return i;
            index[i] = ix;
            half[i] = (ushort)(v >> w);
        }
        return n;
    }

    /// <summary>The entries of tokens below <paramref name="count"/> as a lane mask and a replacement row per token, in
    /// one pass over the packed bits (for the fused attention kernels, which blend a whole token's outliers into its
    /// decoded registers with one masked blend per register, however many it has): entry (t, c) sets bit
    /// <c>laneOf[c]</c> of <c>masks[t]</c> and writes its value (f32) to <c>dense[t * 64 + laneOf[c]]</c>.
    /// masks[0..count) are cleared first; lanes of <paramref name="dense"/> whose bit is clear are left as they were.
    /// Head dims up to 64 (one mask word per token).</summary>
    public unsafe void ToLanes(int count, int headDim, ReadOnlySpan<byte> laneOf, Span<ulong> masks, Span<float> dense)
    {
        if (headDim > 64 || laneOf.Length < headDim || masks.Length < count || dense.Length < count * 64)
            throw new ArgumentException($"{count} tokens of head dim {headDim}: {laneOf.Length} lanes, room for {masks.Length} masks, {dense.Length} values");
        masks[..count].Clear();
        int n = Count;
        if (n == 0) return;
        int w = IndexBits, width = w + 16, limit = count * headDim;
        int shift = (headDim & (headDim - 1)) == 0 ? System.Numerics.BitOperations.TrailingZeroCount(headDim) : -1;
        uint mask = (uint)((1UL << w) - 1);
        var data = _data;
        if (shift >= 0 && n <= MaxVectorEntries && Avx512Vbmi.IsSupported && Vector512.IsHardwareAccelerated && BitConverter.IsLittleEndian)
        {
            ToLanesVector(n, w, limit, shift, headDim, laneOf, masks, dense);
            return;
        }
        // Entries whose 64-bit read stays inside the array (the last few may not: read byte by byte).
        long safeBits = (data.Length - 8L) * 8 - Header * 8;
        int safe = safeBits < 0 ? 0 : (int)Math.Min(n, safeBits / width + 1);
        fixed (byte* p = data, lanes = laneOf)
        fixed (ulong* m = masks)
        fixed (float* x = dense)
        {
            long bit = Header * 8;
            for (int i = 0; i < n; i++, bit += width)
            {
                ulong v;
                if (i < safe)
                {
                    v = Unsafe.ReadUnaligned<ulong>(p + (bit >> 3));
                    if (!BitConverter.IsLittleEndian) v = BinaryPrimitives.ReverseEndianness(v);
                    v >>= (int)(bit & 7);
                }
                else v = ReadBits(data, bit, width);
                int ix = (int)((uint)v & mask);
                if (ix >= limit) break;   // sorted: the rest belong to later tokens
                int t = shift >= 0 ? ix >> shift : ix / headDim;
                int lane = lanes[ix - t * headDim];
                m[t] |= 1UL << lane;
                x[t * 64 + lane] = QuantFormats.HalfToSingle((ushort)(v >> w));
            }
        }
    }

    /// <summary>Most entries <see cref="ToLanesVector"/> unpacks on the stack (a 32 x 64 block at 1% holds ~20-70).</summary>
    private const int MaxVectorEntries = 512;

    /// <summary><see cref="ToLanes"/> for power-of-two head dims on AVX-512 VBMI: the entries are unpacked 8 at a time
    /// (8 entries of w + 16 bits are w + 16 whole bytes, so every group starts on a byte and each entry sits at the same
    /// bit offset in its group's 64-byte window: one byte permute and one variable shift per group take all 8 out) and
    /// their f16 values widened 8 at a time (<see cref="HalfDot.F16ToF32x8"/>, exact for every bit pattern, the same
    /// floats as <see cref="QuantFormats.HalfToSingle"/>). Each entry's token, lane (a byte permute through the lane
    /// map), value offset and mask bit are worked out 8 at a time too, and the bits OR-ed over each token's run of
    /// entries in the register (entries are sorted by token, so a run is contiguous: a segmented scan in 3 steps,
    /// carried across groups), so the last pass only stores: masks[t] = the run's bits so far (the run's last entry
    /// stores them all) and the value at its lane. The scalar pass this replaces (token, lane lookup and a
    /// read-modify-write of masks[t] per entry, chained through store forwarding within a token) was 7.5% of a
    /// nuq4-1% decode token at 4000 tokens (session 10's profile).</summary>
    [SkipLocalsInit]   // the per-entry arrays are written before they are read; the window copy's bytes past the data are never used
    private unsafe void ToLanesVector(int n, int w, int limit, int shift, int headDim, ReadOnlySpan<byte> laneOf, Span<ulong> masks, Span<float> dense)
    {
        int width = w + 16, groups = (n + 7) / 8;
        var (ctrl, sh) = GroupPlans[w];
        var indexMask = Vector512.Create((1UL << w) - 1);
        int* idx = stackalloc int[groups * 8];
        float* val = stackalloc float[groups * 8];
        var data = _data;
        int len = data.Length, cmask = headDim - 1;
        fixed (byte* p = data, lanes = laneOf)
        fixed (ulong* m = masks)
        fixed (float* x = dense)
        {
            // The lane map as a 64-byte permute table (head dims below 64: the rest unused, channels stay below headDim).
            byte* table = stackalloc byte[64];
            Buffer.MemoryCopy(lanes, table, 64, headDim);
            var laneTable = Vector512.Load(table);
            int* tok = idx, off = stackalloc int[groups * 8];
            ulong* bits = stackalloc ulong[groups * 8];
            var chanMask = Vector512.Create((ulong)cmask);
            var byteMask = Vector512.Create(0xFFUL);
            // Lane i's neighbour i - s (s = 1, 2, 4) for the segmented scan; lanes below s have none (masked out by fromS).
            var up1 = Vector512.Create(0UL, 0, 1, 2, 3, 4, 5, 6);
            var up2 = Vector512.Create(0UL, 0, 0, 1, 2, 3, 4, 5);
            var up4 = Vector512.Create(0UL, 0, 0, 0, 0, 1, 2, 3);
            var from1 = Vector512.Create(0UL, ~0UL, ~0UL, ~0UL, ~0UL, ~0UL, ~0UL, ~0UL);
            var from2 = Vector512.Create(0UL, 0UL, ~0UL, ~0UL, ~0UL, ~0UL, ~0UL, ~0UL);
            var from4 = Vector512.Create(0UL, 0UL, 0UL, 0UL, ~0UL, ~0UL, ~0UL, ~0UL);
            ulong carryT = ulong.MaxValue, carryBits = 0;
            for (int g = 0; g < groups; g++)
            {
                var v = Window(p, len, Header + g * width, ctrl, sh);
                HalfDot.F16ToF32x8(Avx512F.ConvertToVector128UInt16(v >> w)).Store(val + 8 * g);
                var ix = v & indexMask;
                var t = Vector512.ShiftRightLogical(ix, shift);
                var lane = Avx512Vbmi.PermuteVar64x8(laneTable, (ix & chanMask).AsByte()).AsUInt64() & byteMask;
                var bit = Avx512F.ShiftLeftLogicalVariable(Vector512<ulong>.One, lane);
                Avx512F.ConvertToVector256Int32(t).Store(tok + 8 * g);
                Avx512F.ConvertToVector256Int32((t << 6) + lane).Store(off + 8 * g);
                // Segmented inclusive OR-scan of the bits over runs of equal tokens (contiguous: entries are sorted).
                bit |= Vector512.Equals(Avx512F.PermuteVar8x64(t, up1), t) & from1
                    & Avx512F.PermuteVar8x64(bit, up1);
                bit |= Vector512.Equals(Avx512F.PermuteVar8x64(t, up2), t) & from2
                    & Avx512F.PermuteVar8x64(bit, up2);
                bit |= Vector512.Equals(Avx512F.PermuteVar8x64(t, up4), t) & from4
                    & Avx512F.PermuteVar8x64(bit, up4);
                // The previous group's last run goes on into this group's first lanes when they hold the same token.
                bit |= Vector512.Equals(t, Vector512.Create(carryT)) & Vector512.Create(carryBits);
                bit.Store(bits + 8 * g);
                carryT = t.GetElement(7);
                carryBits = bit.GetElement(7);
            }
            int tokens = limit >> shift;   // entries of tokens from here on lie past the limit (sorted: stop at the first)
            for (int i = 0; i < n; i++)
            {
                int t = tok[i];
                if (t >= tokens) break;
                m[t] = bits[i];
                x[off[i]] = val[i];
            }
        }
    }

    /// <summary>The 8 entries of the group whose window starts at byte <paramref name="start"/>, each in its 64-bit
    /// lane's low bits (garbage above). The last windows would read past the array: a masked load (no fault past the
    /// mask) takes what is there.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector512<ulong> Window(byte* p, int len, int start, Vector512<byte> ctrl, Vector512<ulong> sh)
    {
        var window = start + 64 <= len ? Vector512.Load(p + start)
            : Avx512BW.MaskLoad(p + start, Vector512.LessThan(ByteIndices, Vector512.Create((byte)(len - start))), default);
        return Avx512F.ShiftRightLogicalVariable(Avx512Vbmi.PermuteVar64x8(window, ctrl).AsUInt64(), sh);
    }

    /// <summary><see cref="GroupPlan"/> for each index width 0..24 (built once: no race between threads).</summary>
    private static readonly (Vector512<byte> Control, Vector512<ulong> Shift)[] GroupPlans =
        Enumerable.Range(0, 25).Select(w => GroupPlan(w + 16)).ToArray();
    private static readonly Vector512<byte> ByteIndices = Vector512.Create(
        (byte)0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
        32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63);

    /// <summary>For entries of <paramref name="width"/> bits, the byte permute that brings entry i of a group's window
    /// (bytes (i * width) / 8 onwards) into 64-bit lane i, and the shift of each lane.</summary>
    private static (Vector512<byte>, Vector512<ulong>) GroupPlan(int width)
    {
        Span<byte> ctrl = stackalloc byte[64];
        Span<ulong> shifts = stackalloc ulong[8];
        for (int i = 0; i < 8; i++)
        {
            int bit = i * width;
            for (int k = 0; k < 8; k++) ctrl[8 * i + k] = (byte)((bit >> 3) + k);
            shifts[i] = (ulong)(bit & 7);
        }
        return (Vector512.Create((ReadOnlySpan<byte>)ctrl), Vector512.Create((ReadOnlySpan<ulong>)shifts));
    }

    /// <summary>First entry whose index is at least <paramref name="index"/> (entries are sorted).</summary>
    public int LowerBound(int index)
    {
        int lo = 0, hi = Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (Entry(mid).Index < index) lo = mid + 1;
            else hi = mid;
        }
        return lo;
    }

    /// <summary>Entries of token <paramref name="token"/> (indices in [token*rowLength, (token+1)*rowLength)).</summary>
    public int TokenCount(int token, int rowLength) => LowerBound((token + 1) * rowLength) - LowerBound(token * rowLength);

    /// <summary>Replaces the entries of one token (indices in [token*headDim, (token+1)*headDim)) by
    /// <paramref name="channels"/> (ascending) and their f16 values.</summary>
    public void SetToken(int token, int headDim, int indexBits, ReadOnlySpan<int> channels, ReadOnlySpan<ushort> halves)
    {
        int n = Count;
        if (n > 0 && IndexBits != indexBits)
            throw new ArgumentException($"outlier rows hold {IndexBits}-bit indices, asked to write {indexBits}-bit ones");
        int a = LowerBound(token * headDim), b = LowerBound((token + 1) * headDim);
        if (b == a && channels.IsEmpty) return;
        int m = n - (b - a) + channels.Length;
        if (m > ushort.MaxValue) throw new InvalidOperationException($"{m} outliers in one block: more than the 65535 a count holds");
        if (a == n && n > 0 && Append(token * headDim, channels, halves, indexBits, m)) return;
        int[]? rentI = null;
        ushort[]? rentV = null;
        Span<int> idx = m <= 512 ? stackalloc int[m] : (rentI = System.Buffers.ArrayPool<int>.Shared.Rent(m)).AsSpan(0, m);
        Span<ushort> val = m <= 512 ? stackalloc ushort[m] : (rentV = System.Buffers.ArrayPool<ushort>.Shared.Rent(m)).AsSpan(0, m);
        int w = 0;
        for (int i = 0; i < a; i++) (idx[w], val[w++]) = Entry(i);
        for (int j = 0; j < channels.Length; j++) { idx[w] = token * headDim + channels[j]; val[w++] = halves[j]; }
        for (int i = b; i < n; i++) (idx[w], val[w++]) = Entry(i);
        Write(idx, val, indexBits);
        if (rentI != null) System.Buffers.ArrayPool<int>.Shared.Return(rentI);
        if (rentV != null) System.Buffers.ArrayPool<ushort>.Shared.Return(rentV);
    }

    /// <summary>Writes a token's entries after every stored one (the usual case: tokens arrive in order) without
    /// rewriting the others, growing the allocation by the same rule as <see cref="Write"/> (exact size rounded up to 8
    /// bytes, the old bytes copied over); false when the list must be rewritten instead.</summary>
    private bool Append(int baseIndex, ReadOnlySpan<int> channels, ReadOnlySpan<ushort> halves, int w, int m)
    {
        long bits = (long)m * (w + 16);
        int bytes = (int)((Header + (bits + 7) / 8 + 7) / 8 * 8);
        int n = Count;
        if (bytes * 2 < _data.Length) return false;
        if (bytes > _data.Length)
        {
            var grown = _total?.Take(bytes) ?? new byte[bytes];
            _data.AsSpan(0, Header + (int)(((long)n * (w + 16) + 7) / 8)).CopyTo(grown);
            _total?.Add(bytes - _data.Length);
            _total?.Keep(_data);
            _data = grown;
        }
        var data = _data;
        for (int j = 0; j < channels.Length; j++)
        {
            int ix = baseIndex + channels[j];
            if ((uint)ix >= 1u << w) throw new ArgumentException($"outlier index {ix} does not fit {w} bits");
            WriteBits(data, Header * 8 + (long)(n + j) * (w + 16), w + 16, (ulong)(uint)ix | (ulong)halves[j] << w);
        }
        data[0] = (byte)m;
        data[1] = (byte)(m >> 8);
        return true;
    }

    /// <summary>Drops every entry (and the allocation).</summary>
    public void Clear() => Resize(0);

    /// <summary>Makes this list a copy of <paramref name="other"/>.</summary>
    public void CopyFrom(BlockOutliers other)
    {
        Resize(other._data.Length);
        other._data.CopyTo(_data, 0);
    }

    /// <summary>The stored bytes (swap out); <see cref="Load"/> takes them back.</summary>
    public ReadOnlySpan<byte> Raw => _data;

    public void Load(ReadOnlySpan<byte> raw)
    {
        if (raw.Length != 0 && (raw.Length < Header || raw.Length < Header + ((long)(raw[0] | raw[1] << 8) * (raw[2] + 16) + 7) / 8))
            throw new ArgumentException($"{raw.Length} bytes are not a block's outlier rows");
        Resize(raw.Length);
        raw.CopyTo(_data);
    }

    /// <summary>Rewrites the list in place, growing the allocation (to the exact size rounded up to 8 bytes) only when
    /// it is too small and shrinking it when less than half is used, so a block filled token by token reallocates
    /// about every other outlier at most and holds no more than it needs plus 8 bytes most of the time.</summary>
    private void Write(ReadOnlySpan<int> idx, ReadOnlySpan<ushort> val, int w)
    {
        int m = idx.Length;
        if (m == 0)
        {
            Resize(0);
            return;
        }
        long bits = (long)m * (w + 16);
        int bytes = (int)((Header + (bits + 7) / 8 + 7) / 8 * 8);
        if (bytes > _data.Length || bytes * 2 < _data.Length) Resize(bytes);
        else _data.AsSpan().Clear();
        var data = _data;
        data[0] = (byte)m;
        data[1] = (byte)(m >> 8);
        data[2] = (byte)w;
        for (int i = 0; i < m; i++)
        {
            if ((uint)idx[i] >= 1u << w) throw new ArgumentException($"outlier index {idx[i]} does not fit {w} bits");
            WriteBits(data, Header * 8 + (long)i * (w + 16), w + 16, (ulong)(uint)idx[i] | (ulong)val[i] << w);
        }
    }

    private void Resize(int bytes)
    {
        if (bytes == _data.Length) return;
        _total?.Add(bytes - _data.Length);
        _total?.Keep(_data);
        _data = bytes == 0 ? Empty : _total?.Take(bytes) ?? new byte[bytes];
    }

    /// <summary>width (up to 40) bits from bit offset <paramref name="bit"/>: one little-endian 64-bit read, or byte
    /// by byte at the end of the array.</summary>
    private static ulong ReadBits(byte[] data, long bit, int width)
    {
        int at = (int)(bit >> 3), shift = (int)(bit & 7);
        ulong v;
        if (at + 8 <= data.Length) v = BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(at, 8));
        else
        {
            v = 0;
            for (int k = 0; at + k < data.Length; k++) v |= (ulong)data[at + k] << (8 * k);
        }
        return (v >> shift) & ((1UL << width) - 1);
    }

    /// <summary>ORs width bits of v in at bit offset <paramref name="bit"/> (the bits there must be clear).</summary>
    private static void WriteBits(byte[] data, long bit, int width, ulong v)
    {
        int at = (int)(bit >> 3), shift = (int)(bit & 7);
        v = (v & ((1UL << width) - 1)) << shift;
        if (at + 8 <= data.Length)
        {
            var span = data.AsSpan(at, 8);
            BinaryPrimitives.WriteUInt64LittleEndian(span, BinaryPrimitives.ReadUInt64LittleEndian(span) | v);
            return;
        }
        for (int k = 0; at + k < data.Length && v >> (8 * k) != 0; k++) data[at + k] |= (byte)(v >> (8 * k));
    }
}

/// <summary>
/// A running sum of the bytes held by a set of <see cref="BlockOutliers"/> (one arena's), and the row arrays they let
/// go, kept by exact size for the next list that grows to that size. A block filled token by token reallocates its
/// rows about every other outlier, so without reuse decode allocated on every token (books-19m, nuq4-1%: ~410 bytes a
/// token); the earlier blocks' discarded sizes serve the later ones. Kept arrays are not in <see cref="Total"/> (they
/// hold no rows): at most <see cref="KeptLimit"/> bytes of arrays up to <see cref="MaxKeptArray"/> bytes each.
/// </summary>
public sealed class OutlierBytes
{
    public const int KeptLimit = 64 << 10, MaxKeptArray = 1024;
    private long _total;
    private readonly Stack<byte[]>?[] _kept = new Stack<byte[]>?[MaxKeptArray / 8 + 1];   // by length / 8
    private int _keptBytes;

    public long Total => Interlocked.Read(ref _total);
    public void Add(long delta) => Interlocked.Add(ref _total, delta);

    /// <summary>A zeroed array of <paramref name="bytes"/> bytes: a kept one of that length, else a new one.</summary>
    internal byte[] Take(int bytes)
    {
        byte[]? a = null;
        if (bytes % 8 == 0 && bytes <= MaxKeptArray)
            lock (_kept)
                if (_kept[bytes / 8] is { Count: > 0 } stack)
                {
                    a = stack.Pop();
                    _keptBytes -= bytes;
                }
        if (a == null) return new byte[bytes];
        Array.Clear(a);
        return a;
    }

    /// <summary>Keeps an array a list no longer uses (nothing may read it any more), within the limits.</summary>
    internal void Keep(byte[] a)
    {
        if (a.Length == 0 || a.Length % 8 != 0 || a.Length > MaxKeptArray) return;
        lock (_kept)
        {
            if (_keptBytes + a.Length > KeptLimit) return;
            (_kept[a.Length / 8] ??= new Stack<byte[]>()).Push(a);
            _keptBytes += a.Length;
        }
    }
}
