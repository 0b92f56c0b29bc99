namespace Kvq.Cuda.Attention;

/// <summary>
/// The device's KVQuant layout on the host, one KV head, written from the kernels' layout comments (kv_encode.cu
/// encode_keys / encode_values, decode_attention.cu code_of / code_at and the slot passes) so that a test without a
/// GPU can hold what the kernels receive against the CPU reference (<c>KernelLab.CpuReference</c>). It is the device's
/// own layout, not the CPU codecs' (which keep every key outlier and a 16-bit value scale in sparse rows beside the
/// block, docs/kvquant.md): per token S key slots (f16 value, u8 channel, 0xFF = empty; the S largest |u| when more
/// are outside [-1, 1], ties to the lower channel, the rest clamped in their codes), values with a u32 of f16 zero |
/// f16 range &lt;&lt; 16 from the non-outliers and VS = 2 slots holding the token's largest and smallest value
/// (VS = 0: zero and range over every value). Codes: tiles of 8 tokens, B words per lane, [tile][word][lane], token
/// t and the lane's channel i at bit (4t + i) B of the lane's bit stream.
/// </summary>
public static class DeviceNuqLayout
{
    public const int D = 128;

    /// <summary>Codes of one stream [tokens][D] (one byte each) packed as the device stores them: whole tiles of 8
    /// tokens, B u32 words per lane and tile, <c>words[(tile * B + word) * 32 + lane]</c>.</summary>
    public static uint[] PackCodes(ReadOnlySpan<byte> codes, int tokens, int bits)
    {
        int tiles = (tokens + DecodeShape.Tile - 1) / DecodeShape.Tile;
        var words = new uint[tiles * bits * 32];
        for (int tok = 0; tok < tokens; tok++)
            for (int c = 0; c < D; c++)
            {
                uint code = codes[tok * D + c];
                if (code >> bits != 0) throw new ArgumentException($"code {code} of token {tok}, channel {c} has more than {bits} bits");
                int tile = tok / DecodeShape.Tile, t = tok % DecodeShape.Tile, lane = c >> 2, i = c & 3;
                int o = (4 * t + i) * bits, wi = o >> 5, bi = o & 31, at = tile * bits * 32 + lane;
                words[at + wi * 32] |= code << bi;
                if (bi + bits > 32) words[at + (wi + 1) * 32] |= code >> (32 - bi);
            }
        return words;
    }

    /// <summary>decode_attention.cu code_at: the code of channel c of stream token tok.</summary>
    public static int CodeAt(ReadOnlySpan<uint> words, int bits, long tok, int c)
    {
        long tile = tok / DecodeShape.Tile;
        int t = (int)(tok % DecodeShape.Tile), lane = c >> 2, i = c & 3;
        long at = tile * bits * 32 + lane;
        int o = (4 * t + i) * bits, wi = o >> 5, bi = o & 31, mask = (1 << bits) - 1;
        if (bi + bits <= 32) return (int)(words[(int)(at + wi * 32)] >> bi) & mask;
        ulong pair = words[(int)(at + wi * 32)] | (ulong)words[(int)(at + (wi + 1) * 32)] << 32;   // __funnelshift_r
        return (int)(pair >> bi) & mask;
    }

    private static int Code(float u, ReadOnlySpan<float> mids)
    {
        int code = 0;
        foreach (float m in mids) code += u > m ? 1 : 0;
        return code;
    }

    private static ushort F2H(float x) => BitConverter.HalfToUInt16Bits((Half)x);
    private static float H2F(ushort h) => (float)BitConverter.UInt16BitsToHalf(h);

    /// <summary>encode_keys for one token: codes (clamped outliers too) and <paramref name="slots"/> slots in channel
    /// order, empty ones (value 0, channel 0xFF) after them.</summary>
    public static void EncodeKey(ReadOnlySpan<float> x, ReadOnlySpan<float> zero, ReadOnlySpan<float> range, ReadOnlySpan<float> mids,
        int slots, Span<byte> codes, Span<ushort> slotValue, Span<byte> slotChannel)
    {
        Span<float> mag = stackalloc float[D];
        Span<bool> flag = stackalloc bool[D];
        int total = 0;
        for (int c = 0; c < D; c++)
        {
            float u = (x[c] - zero[c]) / range[c];
            codes[c] = (byte)Code(u, mids);
            mag[c] = Math.Abs(u);
            flag[c] = u > 1f || u < -1f;
            total += flag[c] ? 1 : 0;
        }
        if (slots == 0) return;
        Span<bool> chosen = stackalloc bool[D];
        if (total <= slots) flag.CopyTo(chosen);
        else
            for (int s = 0; s < slots; s++)
            {
                int best = -1;   // select_outliers: the largest |u| not yet chosen, ties to the lower channel
                for (int c = 0; c < D; c++)
                    if (flag[c] && !chosen[c] && (best < 0 || mag[c] > mag[best])) best = c;
                chosen[best] = true;
            }
        int w = 0;
        for (int c = 0; c < D; c++)
            if (chosen[c]) { slotValue[w] = F2H(x[c]); slotChannel[w++] = (byte)c; }
        for (; w < slots; w++) { slotValue[w] = 0; slotChannel[w] = 0xFF; }
    }

    /// <summary>encode_values for one token: codes, the zero/range word and <paramref name="slots"/> (2 or 0) slots
    /// (the lower channel first).</summary>
    public static uint EncodeValue(ReadOnlySpan<float> x, ReadOnlySpan<float> mids, int slots, Span<byte> codes, Span<ushort> slotValue,
        Span<byte> slotChannel)
    {
        if (slots != 0 && slots != 2) throw new ArgumentException($"{slots} value slots: the device keeps 2 (largest and smallest) or none");
        int cmax = -1, cmin = -1;
        if (slots == 2)
        {
            for (int c = 0; c < D; c++) if (cmax < 0 || x[c] > x[cmax]) cmax = c;
            for (int c = 0; c < D; c++) if (c != cmax && (cmin < 0 || x[c] < x[cmin])) cmin = c;
        }
        float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
        for (int c = 0; c < D; c++)
            if (c != cmax && c != cmin) { lo = Math.Min(lo, x[c]); hi = Math.Max(hi, x[c]); }
        ushort zh = F2H(Math.Clamp((hi + lo) * 0.5f, -65504f, 65504f)), rh = F2H(Math.Min((hi - lo) * 0.5f, 65504f));
        float zero = H2F(zh), range = H2F(rh);
        for (int c = 0; c < D; c++) codes[c] = (byte)Code(range > 0 ? (x[c] - zero) / range : 0, mids);
        if (slots == 2)
        {
            int a = Math.Min(cmax, cmin), b = Math.Max(cmax, cmin);
            slotChannel[0] = (byte)a; slotValue[0] = F2H(x[a]);
            slotChannel[1] = (byte)b; slotValue[1] = F2H(x[b]);
        }
        return zh | (uint)rh << 16;
    }

    /// <summary>Keys as the kernels read them: zero + range x level of the code, then every non-empty slot's f16
    /// value at its channel (the kernels add value - dense).</summary>
    public static void DecodeKey(ReadOnlySpan<uint> words, int bits, long tok, ReadOnlySpan<float> zero, ReadOnlySpan<float> range,
        ReadOnlySpan<float> levels, ReadOnlySpan<ushort> slotValue, ReadOnlySpan<byte> slotChannel, Span<float> row)
    {
        for (int c = 0; c < D; c++) row[c] = zero[c] + range[c] * levels[CodeAt(words, bits, tok, c)];
        for (int s = 0; s < slotChannel.Length; s++)
            if (slotChannel[s] != 0xFF) row[slotChannel[s]] = H2F(slotValue[s]);
    }

    /// <summary>Values as the kernels read them: f16 range x level + f16 zero, then the slots' f16 values.</summary>
    public static void DecodeValue(ReadOnlySpan<uint> words, int bits, long tok, uint zeroRange, ReadOnlySpan<float> levels,
        ReadOnlySpan<ushort> slotValue, ReadOnlySpan<byte> slotChannel, Span<float> row)
    {
        float zero = H2F((ushort)(zeroRange & 0xffff)), range = H2F((ushort)(zeroRange >> 16));
        for (int c = 0; c < D; c++) row[c] = zero + range * levels[CodeAt(words, bits, tok, c)];
        for (int s = 0; s < slotChannel.Length; s++)
            if (slotChannel[s] != 0xFF) row[slotChannel[s]] = H2F(slotValue[s]);
    }
}
