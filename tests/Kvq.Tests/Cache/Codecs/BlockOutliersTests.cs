using Kvq.Cache.Codecs;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>
/// <see cref="BlockOutliers"/> (word-at-a-time bit packing, in-place appends, bulk <see cref="BlockOutliers.Unpack"/> and
/// <see cref="BlockOutliers.ToLanes"/>)
/// against a plain model: a sorted list of (index, half) packed bit by bit into the documented layout (u16 count, u8
/// index width, then per entry w index bits and 16 value bits, little-endian). Random tokens written in order (the
/// append path) and out of order or rewritten (the rewrite path), odd block shapes (index widths 5 to 17 bits).
/// </summary>
public class BlockOutliersTests
{
    private static byte[] ReferenceBytes(SortedDictionary<int, ushort> entries, int w)
    {
        if (entries.Count == 0) return [];
        int bits = entries.Count * (w + 16);
        var data = new byte[3 + (bits + 7) / 8];
        data[0] = (byte)entries.Count;
        data[1] = (byte)(entries.Count >> 8);
        data[2] = (byte)w;
        long at = 24;
        foreach (var (index, half) in entries)
        {
            ulong v = (ulong)(uint)index | (ulong)half << w;
            for (int k = 0; k < w + 16; k++, at++)
                if (((v >> k) & 1) != 0) data[at >> 3] |= (byte)(1 << (int)(at & 7));
        }
        return data;
    }

    [Theory]
    [InlineData(32, 64, true)]
    [InlineData(32, 64, false)]
    [InlineData(7, 5, true)]
    [InlineData(3, 11, false)]
    [InlineData(64, 128, true)]
    [InlineData(17, 96, false)]
    [InlineData(1, 32, true)]
    public void MatchesBitByBitModel(int blockTokens, int headDim, bool inOrder)
    {
        var rng = new Random(TestSeeds.Of(nameof(MatchesBitByBitModel), blockTokens, headDim, inOrder));
        int w = BlockOutliers.IndexBitsFor(blockTokens, headDim);
        var total = new OutlierBytes();
        var rows = new BlockOutliers(total);
        var model = new SortedDictionary<int, ushort>();
        var order = Enumerable.Range(0, blockTokens).ToList();
        if (!inOrder)
        {
            order = order.OrderBy(_ => rng.Next()).ToList();
            order.AddRange(Enumerable.Range(0, blockTokens / 2 + 1).Select(_ => rng.Next(blockTokens)));   // rewrites
        }
        foreach (int t in order)
        {
            // 0 to 4 channels, ascending; sometimes none (a token without outliers, or one whose outliers go away).
            int k = rng.Next(0, Math.Min(5, headDim + 1));
            var channels = Enumerable.Range(0, headDim).OrderBy(_ => rng.Next()).Take(k).Order().ToArray();
            var halves = channels.Select(_ => (ushort)rng.Next(1, 65536)).ToArray();
            rows.SetToken(t, headDim, w, channels, halves);
            foreach (var key in model.Keys.Where(i => i / headDim == t).ToList()) model.Remove(key);
            for (int j = 0; j < k; j++) model[t * headDim + channels[j]] = halves[j];

            var expected = ReferenceBytes(model, w);
            Assert.Equal(model.Count, rows.Count);
            Assert.Equal(expected, rows.Raw[..expected.Length].ToArray());
            Assert.All(rows.Raw[expected.Length..].ToArray(), b => Assert.Equal(0, b));
            Assert.True(rows.Bytes % 8 == 0 && rows.Bytes >= expected.Length, $"{rows.Bytes} bytes held for {expected.Length}");
            if (inOrder) Assert.True(rows.Bytes < expected.Length + 8, $"{rows.Bytes} bytes held for {expected.Length} (in-order appends grow exactly)");
            Assert.Equal(rows.Bytes, total.Total);
        }

        var keys = model.Keys.ToArray();
        for (int i = 0; i < keys.Length; i++) Assert.Equal((keys[i], model[keys[i]]), rows.Entry(i));
        var index = new int[rows.Count];
        var half = new ushort[rows.Count];
        foreach (int count in new[] { 0, 1, blockTokens / 2, blockTokens - 1, blockTokens })
        {
            int n = rows.Unpack(count * headDim, index, half);
            var want = keys.Where(i => i < count * headDim).ToArray();
            Assert.Equal(want, index[..n]);
            Assert.Equal(want.Select(i => model[i]).ToArray(), half[..n]);
            if (headDim <= 64) CheckLanes(rows, model, count, headDim, rng);
        }
    }

    /// <summary>Lists of one arena (one <see cref="OutlierBytes"/>) reuse the arrays others let go: a second block filled
    /// token by token with as many outliers per token as the first, after the first was cleared, allocates nothing and
    /// holds exactly its own entries (the reused arrays come back zeroed).</summary>
    [Theory]
    [InlineData(32, 64)]
    [InlineData(17, 96)]
    public void ArraysALetGoListServeTheNextOne(int blockTokens, int headDim)
    {
        var rng = new Random(TestSeeds.Of(nameof(ArraysALetGoListServeTheNextOne), blockTokens, headDim));
        int w = BlockOutliers.IndexBitsFor(blockTokens, headDim);
        var counts = Enumerable.Range(0, blockTokens).Select(_ => rng.Next(0, 4)).ToArray();
        (int[] Channels, ushort[] Halves)[] Tokens() => counts.Select(k =>
        {
            var c = Enumerable.Range(0, headDim).OrderBy(_ => rng.Next()).Take(k).Order().ToArray();
            return (c, c.Select(_ => (ushort)rng.Next(1, 65536)).ToArray());
        }).ToArray();
        var first = Tokens();
        var second = Tokens();
        var total = new OutlierBytes();
        var a = new BlockOutliers(total);
        var b = new BlockOutliers(total);
        for (int t = 0; t < blockTokens; t++) a.SetToken(t, headDim, w, first[t].Channels, first[t].Halves);
        a.Clear();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int t = 0; t < blockTokens; t++) b.SetToken(t, headDim, w, second[t].Channels, second[t].Halves);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        var model = new SortedDictionary<int, ushort>();
        for (int t = 0; t < blockTokens; t++)
            for (int j = 0; j < second[t].Channels.Length; j++) model[t * headDim + second[t].Channels[j]] = second[t].Halves[j];
        var expected = ReferenceBytes(model, w);
        Assert.Equal(expected, b.Raw[..expected.Length].ToArray());
        Assert.All(b.Raw[expected.Length..].ToArray(), x => Assert.Equal(0, x));
        Assert.Equal(b.Bytes, total.Total);
    }

    /// <summary>Tokens with many outliers (runs of up to 15 entries: one token's run spans up to three of the vector
    /// unpacker's 8-entry groups, so its mask is carried across groups) and tokens with none between them, power-of-two
    /// head dims (the vector path) with every prefix of tokens as the limit.</summary>
    [Theory]
    [InlineData(32, 64, 15)]
    [InlineData(32, 16, 9)]
    [InlineData(16, 32, 12)]
    public void LanesOfCrowdedTokensMatchTheModel(int blockTokens, int headDim, int most)
    {
        var rng = new Random(TestSeeds.Of(nameof(LanesOfCrowdedTokensMatchTheModel), blockTokens, headDim, most));
        int w = BlockOutliers.IndexBitsFor(blockTokens, headDim);
        var rows = new BlockOutliers();
        var model = new SortedDictionary<int, ushort>();
        for (int t = 0; t < blockTokens; t++)
        {
            int k = rng.Next(3) == 0 ? 0 : rng.Next(1, most + 1);
            var channels = Enumerable.Range(0, headDim).OrderBy(_ => rng.Next()).Take(k).Order().ToArray();
            var halves = channels.Select(_ => (ushort)(rng.Next(1, 0x7C00) | rng.Next(2) << 15)).ToArray();   // finite f16, either sign
            rows.SetToken(t, headDim, w, channels, halves);
            for (int j = 0; j < k; j++) model[t * headDim + channels[j]] = halves[j];
        }
        Assert.True(rows.Count > 8 * 3, $"{rows.Count} entries: too few to span several groups");
        for (int count = 0; count <= blockTokens; count++) CheckLanes(rows, model, count, headDim, rng);
    }

    /// <summary><see cref="BlockOutliers.ToLanes"/> against the model: under a random channel -> lane map, each token's
    /// mask has exactly its entries' lanes, those lanes hold the f32 of the entries' f16, every other lane is untouched
    /// and masks start from garbage.</summary>
    private static void CheckLanes(BlockOutliers rows, SortedDictionary<int, ushort> model, int count, int headDim, Random rng)
    {
        var laneOf = Enumerable.Range(0, 64).OrderBy(_ => rng.Next()).Take(headDim).Select(l => (byte)l).ToArray();
        var masks = Enumerable.Range(0, count + 1).Select(_ => (ulong)rng.NextInt64()).ToArray();
        const float Untouched = -12345.5f;
        var dense = Enumerable.Repeat(Untouched, (count + 1) * 64).ToArray();
        ulong beyond = masks[count];
        rows.ToLanes(count, headDim, laneOf, masks, dense);
        Assert.Equal(beyond, masks[count]);
        for (int t = 0; t < count; t++)
        {
            ulong want = 0;
            foreach (var (index, h) in model.Where(e => e.Key / headDim == t))
            {
                int lane = laneOf[index % headDim];
                want |= 1UL << lane;
                Assert.Equal((float)BitConverter.UInt16BitsToHalf(h), dense[t * 64 + lane]);
            }
            Assert.Equal(want, masks[t]);
            for (int lane = 0; lane < 64; lane++)
                if ((want >> lane & 1) == 0) Assert.Equal(Untouched, dense[t * 64 + lane]);
        }
        for (int i = count * 64; i < dense.Length; i++) Assert.Equal(Untouched, dense[i]);
    }

    /// <summary><see cref="BlockOutliers.ToLanes"/> takes buffers of exactly the size it needs (count masks, count x 64
    /// values, headDim lanes) and refuses each one a unit short, and head dims past 64, naming the sizes (found by
    /// mutation testing: the guard's comparisons could be weakened or inverted unnoticed while every call passed room
    /// to spare).</summary>
    [Theory]
    [InlineData(7, 24)]
    [InlineData(13, 64)]
    public void LanesTakeExactBuffersAndRefuseShortOnes(int count, int headDim)
    {
        var rows = new BlockOutliers();
        int w = BlockOutliers.IndexBitsFor(16, headDim);
        rows.SetToken(count - 1, headDim, w, [0, headDim - 1], [0x3c00, 0xbc00]);
        var laneOf = Enumerable.Range(0, headDim).Select(l => (byte)l).ToArray();
        var masks = new ulong[count];
        var dense = new float[count * 64];
        rows.ToLanes(count, headDim, laneOf, masks, dense);
        Assert.Equal(1UL | 1UL << (headDim - 1), masks[count - 1]);
        Assert.Equal(-1f, dense[(count - 1) * 64 + headDim - 1]);
        var e1 = Assert.Throws<ArgumentException>(() => rows.ToLanes(count, headDim, laneOf.AsSpan(0, headDim - 1), new ulong[count], new float[count * 64]));
        Assert.Contains($"{headDim - 1} lanes", e1.Message);
        var e2 = Assert.Throws<ArgumentException>(() => rows.ToLanes(count, headDim, laneOf, new ulong[count - 1], new float[count * 64]));
        Assert.Contains($"room for {count - 1} masks", e2.Message);
        var e3 = Assert.Throws<ArgumentException>(() => rows.ToLanes(count, headDim, laneOf, new ulong[count], new float[count * 64 - 1]));
        Assert.Contains($"{count * 64 - 1} values", e3.Message);
        Assert.Throws<ArgumentException>(() => rows.ToLanes(count, 65, new byte[65], new ulong[count], new float[count * 64]));
    }

    [Fact]
    public void UnpackRefusesTooSmallBuffers()
    {
        var rows = new BlockOutliers();
        int w = BlockOutliers.IndexBitsFor(32, 64);
        rows.SetToken(3, 64, w, [1, 9], [0x3c00, 0xbc00]);
        var ex = Assert.Throws<ArgumentException>(() => rows.Unpack(32 * 64, new int[1], new ushort[1]));
        Assert.Contains("2", ex.Message);
    }
}
