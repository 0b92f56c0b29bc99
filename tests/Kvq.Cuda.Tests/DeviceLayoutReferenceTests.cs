using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cuda.Attention;
using Kvq.KernelLab;

namespace Kvq.Cuda.Tests;

/// <summary>
/// The CPU side of the GPU reference check (no GPU needed): what the kernels receive, built and decoded on the host
/// exactly as kv_encode.cu writes it and decode_attention.cu's layout comments read it (<see cref="DeviceNuqLayout"/>:
/// packed tile words, key slots, the value zero/range word and slots), must decode to what
/// <see cref="CpuReference.DecodedCache"/> holds the kernels to. Runs 28-29 failed on the GPU (rel 6e-3 to 3e-2)
/// because the reference had followed issue 17's CPU codecs (every key outlier kept, 16-bit value scale, margin rule)
/// while the device layout had not; this test fails the same way on the CPU.
/// </summary>
public class DeviceLayoutReferenceTests
{
    private const int D = 128;

    /// <summary>Widths and the lab's layouts: slots (nuqB-1%), dense (nuqBd), sparse keys (nuqBs). InlineData, not
    /// MemberData: the NativeAOT GPU test runner (dev/gpu/GpuTests) cannot publish xunit's MemberData reflection.</summary>
    [Theory]
    [InlineData(2, "slots")]
    [InlineData(2, "dense")]
    [InlineData(2, "sparse")]
    [InlineData(3, "slots")]
    [InlineData(3, "dense")]
    [InlineData(3, "sparse")]
    [InlineData(4, "slots")]
    [InlineData(4, "dense")]
    [InlineData(4, "sparse")]
    public void TheDeviceLayoutAsTheKernelsReadItIsWhatTheReferenceHoldsThemTo(int bits, string layout)
    {
        const int heads = 2, sink = 1, tokens = 45, positions = sink + tokens;   // a partial last tile
        var (keySpec, valueSpec, keySlots, valueSlots, cap) = layout switch
        {
            "slots" => ($"nuq{bits}-1%", (string?)null, DecodeShape.KeySlots, DecodeShape.ValueSlots, 0),
            "dense" => ($"nuq{bits}", null, 0, 0, 0),
            _ => ($"nuq{bits}-0.1%", $"nuq{bits}", 2, 0, DecodeShape.KeyListWords - 1),
        };
        var rng = new Random(1000 * bits + layout.Length);
        var profile = RandomProfile(rng, heads, bits);
        var rawK = new float[heads * positions * D];
        var rawV = new float[heads * positions * D];
        int manyOutliers = 0;
        for (int h = 0; h < heads; h++)
            for (int p = 0; p < positions; p++)
            {
                int o = (h * positions + p) * D;
                for (int c = 0; c < D; c++)
                {
                    float z = profile.KeyZero[h * D + c], r = profile.KeyRange[h * D + c];
                    rawK[o + c] = z + r * (float)(rng.NextDouble() * 1.9 - 0.95);
                    rawV[o + c] = (float)(rng.NextDouble() * 3 - 1.2);
                }
                // Key outliers: none, a few, or more than the device's slots (|u| from 1.2 to 9, some equal magnitudes).
                int n = p % 4 == 3 ? 7 : p % 3;
                if (n > DecodeShape.KeySlots) manyOutliers++;
                for (int j = 0; j < n; j++)
                {
                    int c = rng.Next(D);
                    float u = j == 1 ? 3f : j == 2 ? -3f : (float)(1.2 + rng.NextDouble() * 8) * (rng.Next(2) == 0 ? -1 : 1);
                    rawK[o + c] = profile.KeyZero[h * D + c] + u * profile.KeyRange[h * D + c];
                }
                // Value spikes of both signs, some of them near the rest (the CPU codec's margin rule would drop them).
                rawV[o + rng.Next(D)] = (float)(rng.NextDouble() * 30 - 15);
                rawV[o + rng.Next(D)] = p % 2 == 0 ? 1.9f : -1.4f;
            }
        Assert.True(manyOutliers > 5, "some tokens have more key outliers than the device has slots");

        var (wantK, wantV) = CpuReference.DecodedCache(keySpec, profile, rawK, rawV, heads, positions, sink, valueSpec, cap);

        var kLevels = profile.KeyCodebook.DecodeLevels(false);
        var vLevels = profile.ValueCodebook.DecodeLevels(false);
        var row = new float[D];
        double worstK = 0, worstV = 0;
        for (int h = 0; h < heads; h++)
        {
            var kz = profile.KeyZero.AsSpan(h * D, D);
            var kr = profile.KeyRange.AsSpan(h * D, D);
            var kcodes = new byte[tokens * D];
            var vcodes = new byte[tokens * D];
            var kslotv = new ushort[tokens * Math.Max(1, keySlots)];
            var kslotc = new byte[tokens * Math.Max(1, keySlots)];
            var vslotv = new ushort[tokens * Math.Max(1, valueSlots)];
            var vslotc = new byte[tokens * Math.Max(1, valueSlots)];
            var zr = new uint[tokens];
            int listed = 0, found = 0;
            for (int t = 0; t < tokens; t++)
            {
                int o = (h * positions + sink + t) * D;
                DeviceNuqLayout.EncodeKey(rawK.AsSpan(o, D), kz, kr, profile.KeyCodebook.Midpoints, keySlots, kcodes.AsSpan(t * D, D),
                    kslotv.AsSpan(t * keySlots, keySlots), kslotc.AsSpan(t * keySlots, keySlots));
                zr[t] = DeviceNuqLayout.EncodeValue(rawV.AsSpan(o, D), profile.ValueCodebook.Midpoints, valueSlots, vcodes.AsSpan(t * D, D),
                    vslotv.AsSpan(t * valueSlots, valueSlots), vslotc.AsSpan(t * valueSlots, valueSlots));
                if (cap == 0) continue;
                // The sparse layout's chunk record (one chunk here): these per-token picks in token and channel order
                // until it holds cap entries; later ones stay clamped in their codes (encode_key_list).
                for (int s = 0; s < keySlots; s++)
                {
                    if (kslotc[t * keySlots + s] == 0xFF) continue;
                    found++;
                    if (listed < cap) listed++;
                    else kslotc[t * keySlots + s] = 0xFF;
                }
            }
            if (cap > 0) Assert.True(found > cap, $"the chunk's record overflows ({found} key outliers, room for {cap})");
            var kwords = DeviceNuqLayout.PackCodes(kcodes, tokens, bits);
            var vwords = DeviceNuqLayout.PackCodes(vcodes, tokens, bits);
            Assert.Equal((tokens + 7) / 8 * bits * 32, kwords.Length);
            for (int t = 0; t < tokens; t++)
            {
                int p = sink + t, o = (h * positions + p) * D;
                for (int c = 0; c < D; c++)
                    Assert.Equal(kcodes[t * D + c], DeviceNuqLayout.CodeAt(kwords, bits, t, c));
                DeviceNuqLayout.DecodeKey(kwords, bits, t, kz, kr, kLevels, kslotv.AsSpan(t * keySlots, keySlots),
                    kslotc.AsSpan(t * keySlots, keySlots), row);
                var rotated = CpuReference.Rotate(row, p, Math.Log2(10000));
                for (int c = 0; c < D; c++)
                    worstK = Math.Max(worstK, Math.Abs(rotated[c] - wantK[o + c]) / (1 + Math.Abs(wantK[o + c])));
                DeviceNuqLayout.DecodeValue(vwords, bits, t, zr[t], vLevels, vslotv.AsSpan(t * valueSlots, valueSlots),
                    vslotc.AsSpan(t * valueSlots, valueSlots), row);
                for (int c = 0; c < D; c++)
                    worstV = Math.Max(worstV, Math.Abs(row[c] - wantV[o + c]) / (1 + Math.Abs(wantV[o + c])));
            }
        }
        Assert.True(worstK < 1e-6, $"nuq{bits} {layout}: keys as the kernels read them differ from the reference by {worstK:E2}");
        Assert.True(worstV < 1e-6, $"nuq{bits} {layout}: values as the kernels read them differ from the reference by {worstV:E2}");
    }

    [Fact]
    public void CodesPackIntoTheKernelsTileWordsAtEveryWidth()
    {
        var rng = new Random(5);
        foreach (int bits in new[] { 2, 3, 4 })
            foreach (int tokens in new[] { 1, 8, 13 })
            {
                var codes = new byte[tokens * D];
                for (int i = 0; i < codes.Length; i++) codes[i] = (byte)rng.Next(1 << bits);
                var words = DeviceNuqLayout.PackCodes(codes, tokens, bits);
                for (int t = 0; t < tokens; t++)
                    for (int c = 0; c < D; c++)
                        Assert.Equal(codes[t * D + c], DeviceNuqLayout.CodeAt(words, bits, t, c));
                // Lane l's first word holds channel 4l's code of the tile's token 0 in its lowest bits (layout comment).
                Assert.Equal(codes[4 * 5], (int)(words[5] & ((1u << bits) - 1)));
            }
        Assert.Throws<ArgumentException>(() => DeviceNuqLayout.PackCodes(Enumerable.Repeat((byte)4, D).ToArray(), 1, 2));
    }

    /// <summary>Random per-channel key scales and random strictly increasing codebooks on [-1, 1].</summary>
    private static NuqLayerProfile RandomProfile(Random rng, int heads, int bits)
    {
        var zero = new float[heads * D];
        var range = new float[heads * D];
        for (int i = 0; i < zero.Length; i++)
        {
            zero[i] = (float)(rng.NextDouble() * 1.6 - 0.8);
            range[i] = (float)(0.3 + rng.NextDouble() * 1.5);
        }
        NuqCodebook Book()
        {
            int n = 1 << bits;
            var levels = new float[n];
            for (int i = 0; i < n; i++) levels[i] = -1f + 2f * (i + 0.15f + 0.7f * (float)rng.NextDouble()) / n;
            levels[0] = -1f;
            levels[^1] = 1f;
            return new NuqCodebook(levels);
        }
        return new NuqLayerProfile(heads, D, zero, range, Book(), Book());
    }
}
