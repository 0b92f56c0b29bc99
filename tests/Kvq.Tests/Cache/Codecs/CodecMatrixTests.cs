using Kvq.Cache;
using Kvq.Cache.Attention;
using Kvq.Cache.Codecs;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>
/// Every registered codec x head dims (8, 32, 64, 96, 128) x block sizes (7, 32, 48) x keys/values, on random
/// KV-like data with outlier channels: round trip within the codec's stated bound, SIMD decode equal to its scalar
/// twin, fused attention kernels equal to the tile path, typed refusals of geometries a format cannot hold.
/// </summary>
public class CodecMatrixTests
{
    public static IEnumerable<object[]> Names() => CodecTestData.Names();

    [Theory, MemberData(nameof(Names))]
    public void RoundTripWithinStatedBound(string name)
    {
        int seed = 0;
        foreach (var (codec, side) in CodecTestData.Codecs(name))
        {
            int bt = codec.BlockTokens, hd = codec.HeadDim;
            var xs = CodecTestData.Tokens(bt, hd, ++seed);
            var block = CodecTestData.Encode(codec, xs, seed);
            var y = new float[bt * hd];
            codec.DecodeBlock(block, bt, y);
            var bound = new float[bt * hd];
            CodecTestData.Bound(codec, xs, bound);
            double worst = 0; // largest error / bound: the bound must hold, and not be vacuous
            for (int i = 0; i < xs.Length; i++)
            {
                float err = MathF.Abs(y[i] - xs[i]);
                Assert.True(err <= bound[i], $"{CodecTestData.Describe(codec, side)}: token {i / hd} channel {i % hd}: {xs[i]} -> {y[i]}, error {err} > bound {bound[i]}");
                if (bound[i] > 0) worst = Math.Max(worst, err / bound[i]);
            }
            if (codec.Name != "f32")
                Assert.True(worst > CodecTestData.TightnessFloor(codec), $"{CodecTestData.Describe(codec, side)}: bound is loose (largest error is {worst:P0} of it)");
        }
    }

    [Theory, MemberData(nameof(Names))]
    public void PartialDecodeIsPrefixOfFullDecode(string name)
    {
        foreach (var (codec, side) in CodecTestData.Codecs(name))
        {
            int bt = codec.BlockTokens, hd = codec.HeadDim;
            var block = CodecTestData.Encode(codec, CodecTestData.Tokens(bt, hd, 7), 7);
            var full = new float[bt * hd];
            codec.DecodeBlock(block, bt, full);
            int count = Math.Max(1, bt - 4);
            var part = Enumerable.Repeat(float.NaN, bt * hd).ToArray();
            codec.DecodeBlock(block, count, part);
            Assert.True(full.AsSpan(0, count * hd).SequenceEqual(part.AsSpan(0, count * hd)), CodecTestData.Describe(codec, side));
            Assert.True(float.IsNaN(part[count * hd]), $"{CodecTestData.Describe(codec, side)} wrote past count tokens");
        }
    }

    /// <summary>The lossy formats: every one carries a scalar reference (<see cref="EveryLossyCodecCarriesOracles"/>).</summary>
    public static IEnumerable<object[]> LossyNames() => Names().Where(n => (string)n[0] is not ("f32" or "f16" or "bf16"));

    [Theory, MemberData(nameof(LossyNames))]
    public void SimdDecodeEqualsScalarReference(string name)
    {
        foreach (var (codec, side) in CodecTestData.Codecs(name))
        {
            var r = Assert.IsAssignableFrom<IKvCodecReference>(codec);
            int bt = codec.BlockTokens, hd = codec.HeadDim;
            // Random bytes are a valid block for every format here except for NaN/inf f16 scales; encode instead.
            var block = CodecTestData.Encode(codec, CodecTestData.Tokens(bt, hd, 11), 11);
            var fast = new float[bt * hd];
            var slow = new float[bt * hd];
            codec.DecodeBlock(block, bt, fast);
            r.DecodeBlockReference(block, bt, slow);
            for (int i = 0; i < fast.Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(fast[i]) == BitConverter.SingleToInt32Bits(slow[i]),
                    $"{CodecTestData.Describe(codec, side)}: value {i}: SIMD {fast[i]} vs reference {slow[i]}");
        }
    }

    [Fact]
    public void EveryLossyCodecCarriesOracles()
    {
        foreach (var (name, _) in KvCodecRegistry.Formats)
        {
            var c = CodecTestData.Create(name, KvSide.Key, 32, 128);
            bool lossy = LossyNames().Any(n => (string)n[0] == name);
            Assert.True(lossy == (c is IKvCodecReference), $"{name}: {(lossy ? "no reference decode / error bound (implement IKvCodecReference)" : "a float format with a reference: test it in SimdDecodeEqualsScalarReference")}");
        }
    }

    [Theory, MemberData(nameof(Names))]
    public void FusedScoresEqualTileMath(string name)
    {
        const int nq = 5;
        foreach (var (codec, side) in CodecTestData.Codecs(name))
        {
            int bt = codec.BlockTokens, hd = codec.HeadDim;
            var block = CodecTestData.Encode(codec, CodecTestData.Tokens(bt, hd, 3), 3);
            var q = CodecTestData.Tokens(nq, hd, 4);
            foreach (int count in new[] { bt, Math.Max(1, bt - 3) })
            {
                var tile = new float[bt * hd];
                codec.DecodeBlock(block, count, tile);
                var expected = new float[nq * count];
                TileMath.Scores(tile, count, hd, q, nq, expected);
                var actual = new float[nq * count];
                codec.Scores(block, count, q, nq, actual, new float[bt * hd]);
                AssertScores(expected, actual, tile, q, count, hd, CodecTestData.Describe(codec, side));
                if (codec is Q8_0Codec q8)
                {
                    // Both SIMD widths, whatever this machine would pick.
                    Array.Clear(actual);
                    q8.ScoresV128(block, count, q, nq, actual);
                    AssertScores(expected, actual, tile, q, count, hd, "q8_0 V128");
                    Array.Clear(actual);
                    q8.ScoresV256(block, count, q, nq, actual);
                    AssertScores(expected, actual, tile, q, count, hd, "q8_0 V256");
                }
            }
        }
    }

    /// <summary>1e-4 relative to sum |q_k k_k|, the scale of a dot product's rounding error.</summary>
    private static void AssertScores(float[] expected, float[] actual, float[] tile, float[] q, int count, int hd, string what)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            int r = i / count, j = i % count;
            double mag = 0;
            for (int k = 0; k < hd; k++) mag += Math.Abs(q[r * hd + k] * tile[j * hd + k]);
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-4 * mag, $"{what}: score[{r},{j}] {actual[i]} vs tile {expected[i]}");
        }
    }

    [Theory, MemberData(nameof(Names))]
    public void FusedAccumulateEqualsTileMath(string name)
    {
        const int nq = 4;
        foreach (var (codec, side) in CodecTestData.Codecs(name))
        {
            int bt = codec.BlockTokens, hd = codec.HeadDim;
            var block = CodecTestData.Encode(codec, CodecTestData.Tokens(bt, hd, 5), 5);
            int count = Math.Max(1, bt - 2);
            var w = CodecTestData.Tokens(nq, count, 6);
            for (int i = 0; i < w.Length; i += 5) w[i] = 0f; // masked positions
            var acc0 = CodecTestData.Tokens(nq, hd, 8);
            var tile = new float[bt * hd];
            codec.DecodeBlock(block, count, tile);
            var expected = (float[])acc0.Clone();
            TileMath.Accumulate(tile, count, hd, w, nq, expected);
            var actual = (float[])acc0.Clone();
            codec.Accumulate(block, count, w, nq, actual, new float[bt * hd]);
            for (int i = 0; i < expected.Length; i++)
            {
                int r = i / hd, c = i % hd;
                double mag = Math.Abs(acc0[i]);
                for (int j = 0; j < count; j++) mag += Math.Abs(w[r * count + j] * tile[j * hd + c]);
                Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-4 * mag,
                    $"{CodecTestData.Describe(codec, side)}: acc[{r},{c}] {actual[i]} vs tile {expected[i]}");
            }
        }
    }

    [Theory, MemberData(nameof(Names))]
    public void EncodeTokenTouchesOnlyItsSlot(string name)
    {
        foreach (var (codec, side) in CodecTestData.Codecs(name))
        {
            int bt = codec.BlockTokens, hd = codec.HeadDim;
            if (codec.EncodesWholeBlocks)
            {
                // Per-channel formats have no per-token encoding: a typed refusal, not a block written half-way.
                var untouched = new byte[codec.BlockBytes];
                Assert.Throws<NotSupportedException>(() => codec.EncodeToken(CodecTestData.Tokens(1, hd, 10), untouched, 0));
                Assert.All(untouched, b => Assert.Equal(0, b));
                continue;
            }
            var block = CodecTestData.Encode(codec, CodecTestData.Tokens(bt, hd, 9), 9);
            var before = new float[bt * hd];
            codec.DecodeBlock(block, bt, before);
            int slot = bt / 2;
            var x = CodecTestData.Tokens(1, hd, 10);
            for (int i = 0; i < hd; i++) x[i] *= 3f;
            codec.EncodeToken(x, block, slot);
            var after = new float[bt * hd];
            codec.DecodeBlock(block, bt, after);
            for (int t = 0; t < bt; t++)
                if (t != slot)
                    Assert.True(before.AsSpan(t * hd, hd).SequenceEqual(after.AsSpan(t * hd, hd)), $"{CodecTestData.Describe(codec, side)}: slot {slot} changed token {t}");
            var bound = new float[hd];
            CodecTestData.Bound(codec, x, bound);
            for (int i = 0; i < hd; i++) Assert.True(MathF.Abs(after[slot * hd + i] - x[i]) <= bound[i], CodecTestData.Describe(codec, side));
        }
    }

    [Theory, MemberData(nameof(Names))]
    public void RefusesGeometriesItCannotHoldWithTypedError(string name)
    {
        foreach (var side in CodecTestData.Sides)
            foreach (int hd in CodecTestData.HeadDims)
                foreach (int bt in CodecTestData.BlockSizes)
                {
                    if (CodecTestData.Rejects(name, bt, hd))
                    {
                        var e = Assert.Throws<KvSpecException>(() => KvCodecRegistry.Create(name, side, bt, hd));
                        Assert.Contains(name, e.Message);
                        Assert.True(e.Message.Contains(hd.ToString()) || e.Message.Contains(bt.ToString()), e.Message);
                    }
                    else Assert.Equal(name, CodecTestData.Create(name, side, bt, hd).Name);
                }
    }

    [Theory, MemberData(nameof(Names))]
    public void LayoutSumsToBlockBytes(string name)
    {
        foreach (var (codec, side) in CodecTestData.Codecs(name))
        {
            var l = codec.BlockLayout;
            Assert.Equal(l.Codes + l.Scales + l.Zeros + l.Outliers + l.Indices + l.Residual, (long)codec.BlockBytes);
            Assert.True(l.Codes > 0, CodecTestData.Describe(codec, side));
            Assert.Equal(codec.BlockBytes * 8.0 / (codec.BlockTokens * codec.HeadDim), codec.BitsPerElement, 12);
        }
    }
}
