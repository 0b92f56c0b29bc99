using Kvq.Cache;
using Kvq.Cache.Attention;
using Kvq.Cache.Codecs;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// The fused KVQuant kernels (NuqChannelCodec.ScoresPreRope / Scores, NuqTokenCodec.Accumulate) against the plain
/// scalar path (the codec's DecodeBlockReference, Rope.RotateAt, TileMath reference) on random blocks: odd token counts, outliers
/// present, query row counts on both sides of the register kernels' limit, consecutive and non-consecutive positions.
/// Tolerance per score: 2e-4 |q_i| |k_j| (float rounding plus the angle table's addition formula, which differs from
/// Rope.Angles by a few ulps of an angle of up to ~5000 rad); per accumulated value: 1e-5 sum_j |w_ij| max|v_j|.
/// </summary>
public class NuqFusedKernelTests
{
    private const int HeadDim = 64;

    private static (KvCodec Codec, byte[] Block, float[] X) Block(string spec, KvSide side, int count, int seed,
        RopeStyle style = RopeStyle.Normal, int headDim = HeadDim, int crowded = 0, bool edges = false)
    {
        var shape = new KvShape(1, 1, 3, headDim, new Rope(headDim, headDim, 10000f, 1f, style));
        var profile = KvQuantTestData.Profile(shape, tokens: 1500);
        var cfg = KvCacheConfig.Parse(spec) with { Profile = profile };
        var codec = cfg.CreateCodec(side, 0, 0, headDim);
        if (codec.HasBlockOutliers) codec = new BlockOutliersTestCodec(codec);   // the block's sparse rows go along
        var x = KvQuantTestData.Activations(count, headDim, seed);
        if (crowded > 0)
        {
            // Every third token gets up to `crowded` channels pushed far out (exact outliers, several per token:
            // the kernels' extra slots), the rest keep what the data gives them (often none).
            var rng = new Random(seed);
            for (int t = 0; t < count; t += 3)
                for (int k = rng.Next(1, crowded + 1); k > 0; k--)
                    x[t * headDim + rng.Next(headDim)] *= 40f;
        }
        if (edges)
        {
            // Exact outliers on the block's first and last token, in the first and last channels and both halves of
            // the first RoPE pairs (lanes 0, 15, 16, 31, 48, 63 of the kernels' registers), sign mixed.
            foreach (int t in new[] { 0, count - 1 })
                foreach (int c in new[] { 0, 1, headDim / 2 - 1, headDim / 2, headDim - 2, headDim - 1 })
                    x[t * headDim + c] = (c % 2 == 0 ? 1 : -1) * (60f + t + c);
        }
        var block = new byte[codec.BlockBytes];
        if (codec.EncodesWholeBlocks)
        {
            var full = new float[codec.BlockTokens * headDim];
            x.CopyTo(full, 0);
            codec.EncodeBlock(full, block);
        }
        else for (int t = 0; t < count; t++) codec.EncodeToken(x.AsSpan(t * headDim, headDim), block, t);
        return (codec, block, x);
    }

    private static float[] Queries(int nq, int seed, int headDim = HeadDim)
    {
        var rng = new Random(seed);
        var q = new float[nq * headDim];
        for (int i = 0; i < q.Length; i++) q[i] = (float)KvQuantTestData.Gaussian(rng);
        return q;
    }

    public static TheoryData<string, int, int, string> KeyCases()
    {
        var d = new TheoryData<string, int, int, string>();
        foreach (var spec in new[] { "nuq4-1%", "nuq3-1%", "nuq2-1%", "nuq3", "nuq4-1%:qnorm" })
            foreach (var (count, nq) in new[] { (32, 3), (31, 1), (7, 8), (1, 3), (32, 9), (19, 48) })
                foreach (var pos in new[] { "run0", "run4000", "run4005", "gaps", "shuffled4064" })
                    d.Add(spec, count, nq, pos);
        return d;
    }

    private static int[] Positions(string kind, int count, int seed)
    {
        var p = new int[count];
        if (kind == "shuffled4064")
        {
            // Positions of one RopeAngleTable step (one base angle: the kernels turn the queries by it and each key by
            // its offset only), out of order, repeats allowed (merged or reordered slots).
            var rng = new Random(seed);
            for (int j = 0; j < count; j++) p[j] = 4064 + rng.Next(RopeAngleTable.Step);
        }
        else if (kind == "gaps")
        {
            var rng = new Random(seed);
            int at = rng.Next(0, 50);
            for (int j = 0; j < count; j++) { p[j] = at; at += rng.Next(1, 4) == 1 ? rng.Next(2, 40) : 1; }
        }
        else
        {
            // run4005: consecutive but not starting on a RopeAngleTable step (tokens of one block on two base angles).
            int first = kind switch { "run4000" => 4000, "run4005" => 4005, _ => 0 };
            for (int j = 0; j < count; j++) p[j] = first + j;
        }
        return p;
    }

    [Theory]
    [MemberData(nameof(KeyCases))]
    public void KeyScoresPreRopeMatchTilePath(string spec, int count, int nq, string positionKind)
    {
        foreach (var style in new[] { RopeStyle.Normal, RopeStyle.Neox })
        {
            var (codec, block, _) = Block(spec, KvSide.Key, count, seed: count * 7 + nq);
            Assert.True(codec.PreRope);
            var rope = new Rope(HeadDim, HeadDim, 10000f, 1f, style);
            var positions = Positions(positionKind, count, count + nq);
            var q = Queries(nq, nq * 13 + count);
            var got = new float[nq * count];
            codec.ScoresPreRope(block, count, positions, rope, q, nq, got, new float[codec.BlockTokens * HeadDim]);

            var tile = new float[count * HeadDim];
            ((IKvCodecReference)codec).DecodeBlockReference(block, count, tile);
            rope.RotateAt(tile, count, positions);
            var expected = new float[nq * count];
            TileMath.ScoresReference(tile, count, HeadDim, q, nq, expected);
            AssertScores(expected, got, q, tile, nq, count, $"{spec} {style}");
        }
    }

    [Theory]
    [InlineData("nuq4-1%:post", 32, 3)]
    [InlineData("nuq3-1%:post", 13, 1)]
    [InlineData("nuq2-1%:post", 32, 12)]
    public void PostRopeKeyScoresMatchTilePath(string spec, int count, int nq)
    {
        var (codec, block, _) = Block(spec, KvSide.Key, count, seed: 5);
        Assert.False(codec.PreRope);
        var q = Queries(nq, 3);
        var got = new float[nq * count];
        codec.Scores(block, count, q, nq, got, new float[codec.BlockTokens * HeadDim]);
        var tile = new float[count * HeadDim];
        ((IKvCodecReference)codec).DecodeBlockReference(block, count, tile);
        var expected = new float[nq * count];
        TileMath.ScoresReference(tile, count, HeadDim, q, nq, expected);
        AssertScores(expected, got, q, tile, nq, count, spec);
    }

    private static void AssertScores(float[] expected, float[] got, float[] q, float[] tile, int nq, int count, string what)
    {
        for (int i = 0; i < nq; i++)
            for (int j = 0; j < count; j++)
            {
                double qn = Norm(q.AsSpan(i * HeadDim, HeadDim)), kn = Norm(tile.AsSpan(j * HeadDim, HeadDim));
                double diff = Math.Abs(expected[i * count + j] - got[i * count + j]);
                Assert.True(diff <= 2e-4 * qn * kn, $"{what}: score ({i}, {j}) {got[i * count + j]} vs {expected[i * count + j]}");
            }
    }

    private static double Norm(ReadOnlySpan<float> x)
    {
        double s = 0;
        foreach (var v in x) s += (double)v * v;
        return Math.Sqrt(s);
    }

    [Theory]
    [InlineData("nuq4-1%", 32, 3)]
    [InlineData("nuq3-1%", 31, 1)]
    [InlineData("nuq2-1%", 7, 2)]
    [InlineData("nuq3-1%", 1, 4)]
    [InlineData("nuq4", 32, 3)]
    [InlineData("nuq3-1%", 32, 5)]
    [InlineData("nuq4-1%", 19, 48)]
    [InlineData("nuq3-1%:uniform", 25, 3)]
    public void ValueAccumulateMatchesTilePath(string spec, int count, int nq)
    {
        var (codec, block, _) = Block(spec, KvSide.Value, count, seed: count + nq);
        var rng = new Random(nq);
        var w = new float[nq * count];
        for (int i = 0; i < w.Length; i++) w[i] = rng.NextDouble() < 0.1 ? 0f : (float)rng.NextDouble();
        var acc0 = new float[nq * HeadDim];
        for (int i = 0; i < acc0.Length; i++) acc0[i] = (float)KvQuantTestData.Gaussian(rng);
        var got = (float[])acc0.Clone();
        codec.Accumulate(block, count, w, nq, got, new float[codec.BlockTokens * HeadDim]);

        var tile = new float[count * HeadDim];
        ((IKvCodecReference)codec).DecodeBlockReference(block, count, tile);
        var expected = (float[])acc0.Clone();
        TileMath.AccumulateReference(tile, count, HeadDim, w, nq, expected);
        for (int i = 0; i < nq; i++)
        {
            double scale = 0;
            for (int j = 0; j < count; j++)
            {
                float mx = 0;
                for (int c = 0; c < HeadDim; c++) mx = Math.Max(mx, Math.Abs(tile[j * HeadDim + c]));
                scale += Math.Abs(w[i * count + j]) * mx;
            }
            for (int c = 0; c < HeadDim; c++)
            {
                double diff = Math.Abs(expected[i * HeadDim + c] - got[i * HeadDim + c]);
                Assert.True(diff <= 1e-5 * Math.Max(1, scale), $"{spec}: acc ({i}, {c}) {got[i * HeadDim + c]} vs {expected[i * HeadDim + c]}");
            }
        }
    }

    /// <summary>Head dims other than 64 take the buffered kernels (any multiple of 32 up to 128).</summary>
    [Theory]
    [InlineData("nuq4-1%", 128, 32, 3)]
    [InlineData("nuq3-1%", 96, 13, 2)]
    [InlineData("nuq2-1%", 128, 7, 12)]
    public void OtherHeadDimsMatchTilePath(string spec, int d, int count, int nq)
    {
        var (keys, kb, _) = Block(spec, KvSide.Key, count, seed: 3, headDim: d);
        var rope = new Rope(d, d, 10000f, 1f, RopeStyle.Normal);
        var positions = Positions("gaps", count, 9);
        var q = Queries(nq, 4, d);
        var got = new float[nq * count];
        keys.ScoresPreRope(kb, count, positions, rope, q, nq, got, new float[keys.BlockTokens * d]);
        var tile = new float[count * d];
        ((IKvCodecReference)keys).DecodeBlockReference(kb, count, tile);
        rope.RotateAt(tile, count, positions);
        var expected = new float[nq * count];
        TileMath.ScoresReference(tile, count, d, q, nq, expected);
        for (int i = 0; i < nq; i++)
            for (int j = 0; j < count; j++)
            {
                double qn = Norm(q.AsSpan(i * d, d)), kn = Norm(tile.AsSpan(j * d, d));
                Assert.True(Math.Abs(expected[i * count + j] - got[i * count + j]) <= 2e-4 * qn * kn, $"{spec} d {d}: score ({i}, {j})");
            }

        var (values, vb, _) = Block(spec, KvSide.Value, count, seed: 4, headDim: d);
        var w = Queries(nq, 5, count);   // nq x count weights
        for (int i = 0; i < w.Length; i++) w[i] = Math.Abs(w[i]);
        var acc = new float[nq * d];
        values.Accumulate(vb, count, w, nq, acc, new float[values.BlockTokens * d]);
        var vt = new float[count * d];
        ((IKvCodecReference)values).DecodeBlockReference(vb, count, vt);
        var accRef = new float[nq * d];
        TileMath.AccumulateReference(vt, count, d, w, nq, accRef);
        for (int i = 0; i < acc.Length; i++)
            Assert.True(Math.Abs(acc[i] - accRef[i]) <= 1e-4 * (1 + Math.Abs(accRef[i])), $"{spec} d {d}: acc {i} {acc[i]} vs {accRef[i]}");
    }

    /// <summary>Outliers on the block's edge tokens and in the edge channels and lanes (the lane-mask blend's first and
    /// last bits of each mask word), keys and values, decode rows (GQA groups 1, 3, 4) and a tile, odd and full counts.</summary>
    [Theory]
    [InlineData("nuq4-1%", 32, 3)]
    [InlineData("nuq3-1%", 32, 4)]
    [InlineData("nuq4-1%", 13, 1)]
    [InlineData("nuq2-1%", 2, 3)]
    [InlineData("nuq3-1%", 31, 9)]
    public void EdgeOutliersMatchScalarPath(string spec, int count, int nq)
    {
        var (keys, kb, _) = Block(spec, KvSide.Key, count, seed: 41 + count, edges: true);
        var rows = ((BlockOutliersTestCodec)keys).Rows;
        Assert.Contains(Enumerable.Range(0, rows.Count), i => rows.Entry(i).Index == (count - 1) * HeadDim + HeadDim - 1);
        var rope = new Rope(HeadDim, HeadDim, 10000f, 1f, RopeStyle.Normal);
        var positions = Positions("run4000", count, 3);
        var q = Queries(nq, 8);
        var got = new float[nq * count];
        keys.ScoresPreRope(kb, count, positions, rope, q, nq, got, new float[keys.BlockTokens * HeadDim]);
        var tile = new float[count * HeadDim];
        ((IKvCodecReference)keys).DecodeBlockReference(kb, count, tile);
        rope.RotateAt(tile, count, positions);
        var expected = new float[nq * count];
        TileMath.ScoresReference(tile, count, HeadDim, q, nq, expected);
        AssertScores(expected, got, q, tile, nq, count, $"{spec} edges");

        var (values, vb, _) = Block(spec, KvSide.Value, count, seed: 43 + count, edges: true);
        var w = Queries(nq, 9, count);
        for (int i = 0; i < w.Length; i++) w[i] = Math.Abs(w[i]);
        var acc = Queries(nq, 10);   // accumulators already holding something
        var accRef = (float[])acc.Clone();
        values.Accumulate(vb, count, w, nq, acc, new float[values.BlockTokens * HeadDim]);
        var vt = new float[count * HeadDim];
        ((IKvCodecReference)values).DecodeBlockReference(vb, count, vt);
        TileMath.AccumulateReference(vt, count, HeadDim, w, nq, accRef);
        double scale = 0;
        foreach (var v in vt) scale = Math.Max(scale, Math.Abs(v));
        for (int i = 0; i < acc.Length; i++)
            Assert.True(Math.Abs(acc[i] - accRef[i]) <= 1e-5 * scale * count + 1e-5, $"{spec} edges: acc {i} {acc[i]} vs {accRef[i]}");
    }

    /// <summary>Blocks whose tokens carry several exact outliers each (up to 9; the block's slot count is its most
    /// crowded token's), keys and values, against the plain scalar path.</summary>
    [Theory]
    [InlineData("nuq4-1%", 32, 3, 9)]
    [InlineData("nuq3-1%", 29, 1, 4)]
    [InlineData("nuq2-1%", 5, 8, 2)]
    [InlineData("nuq4-1%", 17, 12, 6)]
    public void CrowdedOutliersMatchScalarPath(string spec, int count, int nq, int crowded)
    {
        var (keys, kb, _) = Block(spec, KvSide.Key, count, seed: 21 + crowded, crowded: crowded);
        var rows = ((BlockOutliersTestCodec)keys).Rows;
        var perToken = Enumerable.Range(0, rows.Count).GroupBy(i => rows.Entry(i).Index / HeadDim).Max(g => g.Count());
        Assert.True(crowded < 3 || perToken >= 3, $"{spec}: the most crowded token has {perToken} outliers");
        var rope = new Rope(HeadDim, HeadDim, 10000f, 1f, RopeStyle.Normal);
        var positions = Positions("gaps", count, 5);
        var q = Queries(nq, 6);
        var got = new float[nq * count];
        keys.ScoresPreRope(kb, count, positions, rope, q, nq, got, new float[keys.BlockTokens * HeadDim]);
        var tile = new float[count * HeadDim];
        ((IKvCodecReference)keys).DecodeBlockReference(kb, count, tile);
        rope.RotateAt(tile, count, positions);
        var expected = new float[nq * count];
        TileMath.ScoresReference(tile, count, HeadDim, q, nq, expected);
        AssertScores(expected, got, q, tile, nq, count, $"{spec} crowded {crowded}");

        var (values, vb, _) = Block(spec, KvSide.Value, count, seed: 31 + crowded, crowded: crowded);
        var w = Queries(nq, 7, count);
        for (int i = 0; i < w.Length; i++) w[i] = Math.Abs(w[i]);
        var acc = new float[nq * HeadDim];
        values.Accumulate(vb, count, w, nq, acc, new float[values.BlockTokens * HeadDim]);
        var vt = new float[count * HeadDim];
        ((IKvCodecReference)values).DecodeBlockReference(vb, count, vt);
        var accRef = new float[nq * HeadDim];
        TileMath.AccumulateReference(vt, count, HeadDim, w, nq, accRef);
        double scale = 0;
        foreach (var v in vt) scale = Math.Max(scale, Math.Abs(v));
        for (int i = 0; i < acc.Length; i++)
            Assert.True(Math.Abs(acc[i] - accRef[i]) <= 1e-5 * scale * count, $"{spec} crowded {crowded}: acc {i} {acc[i]} vs {accRef[i]}");
    }
}
