using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cuda.Attention;

namespace Kvq.KernelLab;

/// <summary>
/// Plain decode attention in double on the CPU, the keys and values decoded by Kvq's own codecs
/// (<see cref="NuqChannelCodec"/> for pre-RoPE keys, <see cref="NuqTokenCodec"/> for values, the same profile) or
/// rounded to f16 for the f16 cache, keys rotated per position, softmax, weighted sum. What the GPU must reproduce.
/// </summary>
public static class CpuReference
{
    public const int D = 128;

    public static double Theta(int pair, double log2Base) => Math.Pow(2, -2.0 * pair / D * log2Base);

    /// <summary>Rows [head][pos][D] as the cache stores them (pre-RoPE for nuq and the sink, f16-rounded for f16)
    /// then rotated at their positions; returns post-RoPE keys and values in double. <paramref name="format"/>: f16,
    /// or the KVQuant spec the GPU cache implements (<see cref="NuqLayerCache.KeySpec"/>: nuqB-1%, nuqB when dense,
    /// nuqB-0.1% for the sparse layout's keys), whose CPU codec encodes the key codes; <paramref name="valueSpec"/> for
    /// the values when it differs. The device keeps its own layout (decode_attention.cu), not the CPU codecs' (every
    /// key outlier and a 16-bit value scale in sparse rows beside the block, since issue 17): keys take the CPU codec's
    /// codes and sparse rows with only the device's <see cref="NuqChannelCodec.OutlierSlots"/> largest |u| per token
    /// kept (the rest decode clamped); <paramref name="keyChunkCap"/> &gt; 0: also at most that many per 256-token
    /// chunk of the stream, in token and channel order (the sparse layout's record). Values: the spec's k largest and
    /// k smallest (<see cref="TokenOutliers.Split"/>) kept in f16, the zero and range of the rest rounded to f16, codes
    /// from the value codebook's midpoints (<see cref="DeviceValueRow"/>).</summary>
    public static (double[] K, double[] V) DecodedCache(string format, NuqLayerProfile? profile, float[] rawK, float[] rawV,
        int heads, int positions, int sink, string? valueSpec = null, int keyChunkCap = 0)
    {
        var k = new double[rawK.Length];
        var v = new double[rawV.Length];
        for (int h = 0; h < heads; h++)
        {
            NuqChannelCodec? kc = null, kclamp = null;
            NuqTokenCodec? vc = null;
            if (profile != null)
            {
                KvQuantSpec Parse(string name)
                {
                    var sp = KvQuantSpec.TryParse(name) ?? throw new ArgumentException($"'{name}' is not a KVQuant spec");
                    return sp.Bits == profile.Bits ? sp : throw new ArgumentException($"{name} with a {profile.Bits}-bit profile");
                }
                var spec = Parse(format);
                kc = new NuqChannelCodec(spec, KvSide.Key, 1, D, profile.KeyZero.AsSpan(h * D, D), profile.KeyRange.AsSpan(h * D, D), profile.KeyCodebook);
                vc = new NuqTokenCodec(Parse(valueSpec ?? format), KvSide.Value, 1, D, profile.ValueCodebook);
                if (spec.HasOutliers)
                    kclamp = new NuqChannelCodec(Parse($"nuq{profile.Bits}"), KvSide.Key, 1, D, profile.KeyZero.AsSpan(h * D, D), profile.KeyRange.AsSpan(h * D, D), profile.KeyCodebook);
            }
            var kblock = new byte[kc?.BlockBytes ?? 1];
            var cblock = new byte[kclamp?.BlockBytes ?? 1];
            var krows = new BlockOutliers();   // the sparse rows of the one-token block
            var row = new float[D];
            var clamped = new float[D];
            long chunk = -1;
            int inChunk = 0;
            for (int p = 0; p < positions; p++)
            {
                long o = ((long)h * positions + p) * D;
                var kr = rawK.AsSpan((int)o, D);
                var vr = rawV.AsSpan((int)o, D);
                if (format == "f16")
                {
                    // The f16 cache keeps post-RoPE keys: rotate exactly, then round to f16.
                    var rot = Rotate(kr, p, Math.Log2(10000));
                    for (int c = 0; c < D; c++) { k[o + c] = (double)(Half)rot[c]; v[o + c] = (double)(Half)vr[c]; }
                    continue;
                }
                if (p < sink)
                {
                    for (int c = 0; c < D; c++) row[c] = (float)(Half)kr[c];
                    Store(k, o, Rotate(row, p, Math.Log2(10000)));
                    for (int c = 0; c < D; c++) v[o + c] = (double)(Half)vr[c];
                    continue;
                }
                kc!.EncodeToken(kr, kblock, krows, 0);
                kc.DecodeBlock(kblock, krows, 1, row);
                if (kclamp != null)
                {
                    if ((p - sink) / 256 != chunk) { chunk = (p - sink) / 256; inChunk = 0; }
                    kclamp.EncodeToken(kr, cblock, 0);
                    kclamp.DecodeBlock(cblock, 1, clamped);
                    // The device keeps S outlier slots per token (the largest |u|, the rest clamped) where the CPU keeps
                    // every outlier in sparse rows: take the token's rows and apply the device's slots and chunk cap.
                    var nuqKeys = kc;
                    int s = nuqKeys.OutlierSlots;
                    var key = kr.ToArray();
                    // The S largest |u| (ties to the lower channel) keep a slot; the chunk's record then takes them in
                    // channel order (kv_encode.cu encode_key_list) until it is full.
                    var kept = Enumerable.Range(0, krows.Count).Select(i => krows.Entry(i).Index)
                        .OrderByDescending(c => Math.Abs(nuqKeys.Normalize(key[c], c))).ThenBy(c => c).Take(s).ToHashSet();
                    for (int i = 0; i < krows.Count; i++)
                    {
                        int c = krows.Entry(i).Index;   // channel order: a one-token block's rows
                        if (kept.Contains(c) && (keyChunkCap <= 0 || inChunk < keyChunkCap)) inChunk++;
                        else row[c] = clamped[c];
                    }
                }
                Store(k, o, Rotate(row, p, Math.Log2(10000)));
                DeviceValueRow(vr, vc!, row);
                for (int c = 0; c < D; c++) v[o + c] = row[c];
            }
        }
        return (k, v);
    }

    /// <summary>One value token as the device layout holds it (kv_encode.cu encode_values, written here from the CPU
    /// codec's parts rather than from the kernel): the codec's <see cref="NuqTokenCodec.OutliersPerTail"/> largest and
    /// smallest values (<see cref="TokenOutliers.Split"/>: the same choice and ties) kept in f16, the zero and range of
    /// the rest in f16, each value's code the number of codebook midpoints below (x - zero) / range, decoded with the
    /// codec's levels. The CPU codec itself has stored a 16-bit scale and kept only candidates beyond a margin since
    /// issue 17 (<see cref="TokenScale"/>, <see cref="TokenOutliers.SplitBeyond"/>), which the device has not adopted.</summary>
    public static void DeviceValueRow(ReadOnlySpan<float> x, NuqTokenCodec codec, Span<float> row)
    {
        int k = codec.OutliersPerTail;
        var isOut = new bool[D];
        var idx = new int[Math.Max(1, 2 * k)];
        var (min, max) = TokenOutliers.Split(x, k, isOut, idx);
        float zero = (float)(Half)Math.Clamp((max + min) * 0.5f, -65504f, 65504f), range = (float)(Half)Math.Min((max - min) * 0.5f, 65504f);
        var mids = codec.Codebook.Midpoints;
        var levels = codec.DecodeLevels;
        for (int c = 0; c < D; c++)
        {
            if (isOut[c]) { row[c] = (float)(Half)x[c]; continue; }
            float u = range > 0 ? (x[c] - zero) / range : 0;
            int code = 0;
            foreach (float m in mids) code += u > m ? 1 : 0;
            row[c] = zero + range * levels[code];
        }
    }

    /// <summary>Exact attention over unquantized f32 keys and values (to show the quantization error separately).</summary>
    public static (double[] K, double[] V) Exact(float[] rawK, float[] rawV, int heads, int positions)
    {
        var k = new double[rawK.Length];
        var v = new double[rawV.Length];
        for (int h = 0; h < heads; h++)
            for (int p = 0; p < positions; p++)
            {
                long o = ((long)h * positions + p) * D;
                Store(k, o, Rotate(rawK.AsSpan((int)o, D), p, Math.Log2(10000)));
                for (int c = 0; c < D; c++) v[o + c] = rawV[o + c];
            }
        return (k, v);
    }

    private static void Store(double[] dst, long o, double[] x)
    {
        for (int c = 0; c < D; c++) dst[o + c] = x[c];
    }

    public static double[] Rotate(ReadOnlySpan<float> x, long pos, double log2Base)
    {
        var r = new double[D];
        for (int j = 0; j < D / 2; j++)
        {
            double a = pos * Theta(j, log2Base), c = Math.Cos(a), s = Math.Sin(a);
            double x0 = x[2 * j], x1 = x[2 * j + 1];
            r[2 * j] = x0 * c - x1 * s;
            r[2 * j + 1] = x0 * s + x1 * c;
        }
        return r;
    }

    /// <summary>out[qh] = softmax(q . k / sqrt(D)) v over all positions of the query head's KV head.</summary>
    public static double[] Attention(float[] q, double[] k, double[] v, int kvHeads, int group, int positions)
    {
        var outp = new double[kvHeads * group * D];
        var s = new double[positions];
        double scale = 1 / Math.Sqrt(D);
        for (int qh = 0; qh < kvHeads * group; qh++)
        {
            int h = qh / group;
            double m = double.NegativeInfinity;
            for (int p = 0; p < positions; p++)
            {
                long o = ((long)h * positions + p) * D;
                double dot = 0;
                for (int c = 0; c < D; c++) dot += q[qh * D + c] * k[o + c];
                s[p] = dot * scale;
                m = Math.Max(m, s[p]);
            }
            double l = 0;
            for (int p = 0; p < positions; p++) { s[p] = Math.Exp(s[p] - m); l += s[p]; }
            for (int p = 0; p < positions; p++)
            {
                long o = ((long)h * positions + p) * D;
                double w = s[p] / l;
                for (int c = 0; c < D; c++) outp[qh * D + c] += w * v[o + c];
            }
        }
        return outp;
    }

    public static (double Rel, double MaxAbs) Compare(ReadOnlySpan<float> got, double[] want)
    {
        double num = 0, den = 0, max = 0;
        for (int i = 0; i < want.Length; i++)
        {
            double e = got[i] - want[i];
            if (double.IsNaN(got[i])) return (double.NaN, double.NaN);
            num += e * e;
            den += want[i] * want[i];
            max = Math.Max(max, Math.Abs(e));
        }
        return (Math.Sqrt(num / den), max);
    }
}
