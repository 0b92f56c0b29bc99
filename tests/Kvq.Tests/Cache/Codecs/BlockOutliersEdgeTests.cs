using Kvq.Cache.Codecs;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>
/// The parts of <see cref="BlockOutliers"/> and <see cref="OutlierBytes"/> that the bit-by-bit model test does not pin
/// (written for the codecs' mutation run): the allocation rule (grow to the exact size rounded up to 8 bytes, shrink
/// only when less than half is used) step by step on random in-order and out-of-order writes, the index width, the
/// swap path (<see cref="BlockOutliers.Raw"/> / <see cref="BlockOutliers.Load"/>) and its refusals at the exact size,
/// <see cref="BlockOutliers.CopyFrom"/>, per-token counts, the width and count guards, and the arena's kept arrays
/// (which lengths are kept, up to what total, handed back zeroed).
/// </summary>
public class BlockOutliersEdgeTests(ITestOutputHelper output)
{
    /// <summary>Bytes of a list of m entries of w-bit indices: header and packed entries, rounded up to 8.</summary>
    private static int Exact(int m, int w) => m == 0 ? 0 : (3 + (m * (w + 16) + 7) / 8 + 7) / 8 * 8;

    [Theory]
    [InlineData(32, 64, true)]
    [InlineData(32, 64, false)]
    [InlineData(9, 13, false)]
    [InlineData(48, 96, true)]
    [InlineData(5, 7, false)]
    public void AllocationGrowsExactlyAndShrinksBelowHalf(int blockTokens, int headDim, bool inOrder)
    {
        int seed = TestSeeds.Of(nameof(AllocationGrowsExactlyAndShrinksBelowHalf), blockTokens, headDim, inOrder);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        int w = BlockOutliers.IndexBitsFor(blockTokens, headDim);
        var total = new OutlierBytes();
        var rows = new BlockOutliers(total);
        var perToken = new int[blockTokens];
        long held = 0;
        int shrinks = 0, grows = 0;
        // Phases of blockTokens writes: one that gives tokens up to 9 outliers, then two that take most of them away
        // (so the list grows, and then falls below half of what it holds). In order: every token in turn (appends, then
        // rewrites); out of order: random tokens.
        int steps = 6 * blockTokens;
        for (int step = 0; step < steps; step++)
        {
            int t = inOrder ? step % blockTokens : rng.Next(blockTokens);
            bool fill = step / blockTokens % 3 == 0;
            int k = fill ? rng.Next(0, Math.Min(headDim, 9) + 1) : (rng.Next(10) == 0 ? 1 : 0);
            var channels = Enumerable.Range(0, headDim).OrderBy(_ => rng.Next()).Take(k).Order().ToArray();
            var halves = channels.Select(_ => (ushort)rng.Next(1, 65536)).ToArray();
            int had = perToken[t];
            rows.SetToken(t, headDim, w, channels, halves);
            perToken[t] = k;
            int m = perToken.Sum();
            Assert.Equal(m, rows.Count);
            long exact = Exact(m, w);
            if (had == 0 && k == 0) { }            // nothing to write: the list is left as it is
            else if (m == 0) held = 0;             // the allocation goes
            else if (exact > held || 2 * exact < held)
            {
                if (exact > held) grows++; else shrinks++;
                held = exact;
            }
            Assert.True(held == rows.Bytes, $"step {step}: token {t} gets {k}, {m} entries: {rows.Bytes} bytes held, the rule gives {held} (exact {exact})");
            Assert.Equal(held, total.Total);
            for (int tok = 0; tok < blockTokens; tok++) Assert.Equal(perToken[tok], rows.TokenCount(tok, headDim));
        }
        output.WriteLine($"{grows} grows, {shrinks} shrinks, final {rows.Count} entries in {rows.Bytes} bytes");
        Assert.True(grows > 0);
        Assert.True(shrinks > 0, "the writes never fell below half: no shrink checked");
        rows.Clear();
        Assert.Equal(0, rows.Count);
        Assert.Equal(0, rows.Bytes);
        Assert.Equal(0, total.Total);
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(1, 2, 1)]
    [InlineData(1, 3, 2)]
    [InlineData(2, 2, 2)]
    [InlineData(1, 5, 3)]
    [InlineData(32, 64, 11)]
    [InlineData(33, 64, 12)]
    [InlineData(7, 9, 6)]
    [InlineData(4096, 4096, 24)]
    public void IndexBitsAreTheFewestThatHoldEveryIndex(int blockTokens, int headDim, int bits)
    {
        Assert.Equal(bits, BlockOutliers.IndexBitsFor(blockTokens, headDim));
        long n = (long)blockTokens * headDim;
        Assert.True(1L << bits >= n && (bits == 1 || 1L << (bits - 1) < n));
    }

    [Fact]
    public void BlocksPastTwentyFourIndexBitsAreRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => BlockOutliers.IndexBitsFor(4097, 4096));
        Assert.Contains("4097 x 4096", e.Message);
    }

    [Theory]
    [InlineData(16, 32)]
    [InlineData(7, 11)]
    public void RawBytesLoadBackAndCopiesAreIndependent(int blockTokens, int headDim)
    {
        int seed = TestSeeds.Of(nameof(RawBytesLoadBackAndCopiesAreIndependent), blockTokens, headDim);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        int w = BlockOutliers.IndexBitsFor(blockTokens, headDim);
        var total = new OutlierBytes();
        var rows = new BlockOutliers(total);
        for (int t = 0; t < blockTokens; t++)
        {
            var ch = Enumerable.Range(0, headDim).OrderBy(_ => rng.Next()).Take(rng.Next(1, 4)).Order().ToArray();
            rows.SetToken(t, headDim, w, ch, ch.Select(_ => (ushort)rng.Next(1, 65536)).ToArray());
        }
        var raw = rows.Raw.ToArray();
        var entries = Enumerable.Range(0, rows.Count).Select(rows.Entry).ToArray();

        var loaded = new BlockOutliers(total);
        loaded.Load(raw);
        Assert.Equal(raw, loaded.Raw.ToArray());
        Assert.Equal(entries, Enumerable.Range(0, loaded.Count).Select(loaded.Entry).ToArray());
        Assert.Equal(w, loaded.IndexBits);
        Assert.Equal(2 * raw.Length, total.Total);

        var copy = new BlockOutliers(total);
        copy.CopyFrom(rows);
        Assert.Equal(raw, copy.Raw.ToArray());
        Assert.Equal(3 * raw.Length, total.Total);
        rows.SetToken(0, headDim, w, [], []);   // the source changes; the copy keeps its entries
        Assert.Equal(entries, Enumerable.Range(0, copy.Count).Select(copy.Entry).ToArray());
        copy.CopyFrom(new BlockOutliers());
        Assert.Equal(0, copy.Count);
        Assert.Equal(0, copy.Bytes);

        // The exact length of the entries (before the 8-byte rounding) loads; one byte less is refused, as is a
        // header cut short. No bytes at all is an empty list.
        int used = 3 + (rows.Count * (w + 16) + 7) / 8;
        var header = rows.Raw.ToArray();
        var exact = new BlockOutliers();
        exact.Load(header.AsSpan(0, used));
        Assert.Equal(Enumerable.Range(0, rows.Count).Select(rows.Entry).ToArray(), Enumerable.Range(0, exact.Count).Select(exact.Entry).ToArray());
        Assert.Throws<ArgumentException>(() => new BlockOutliers().Load(header.AsSpan(0, used - 1)));
        Assert.Throws<ArgumentException>(() => new BlockOutliers().Load(header.AsSpan(0, 2)));
        exact.Load([]);
        Assert.Equal(0, exact.Count);
        Assert.Equal(0, exact.Bytes);
    }

    [Fact]
    public void WritingAnotherIndexWidthIsRefusedWhileEntriesRemain()
    {
        var rows = new BlockOutliers();
        rows.SetToken(2, 16, 9, [3], [0x3c00]);
        var e = Assert.Throws<ArgumentException>(() => rows.SetToken(4, 16, 10, [1], [0x3c00]));
        Assert.Contains("9-bit", e.Message);
        rows.SetToken(2, 16, 9, [], []);
        Assert.Equal(0, rows.Count);
        rows.SetToken(4, 16, 10, [1], [0x4000]);   // empty again: any width
        Assert.Equal(10, rows.IndexBits);
        Assert.Equal((4 * 16 + 1, (ushort)0x4000), rows.Entry(0));
        // An index past the width is refused (append and rewrite paths).
        Assert.Throws<ArgumentException>(() => rows.SetToken(70, 16, 10, [0], [1]));
        Assert.Throws<ArgumentException>(() => rows.SetToken(0, 16, 10, [2000], [1]));
    }

    [Fact]
    public void MoreThan65535EntriesAreRefused()
    {
        const int headDim = 128, tokens = 520;
        int w = BlockOutliers.IndexBitsFor(tokens, headDim);
        var rows = new BlockOutliers();
        var all = Enumerable.Range(0, headDim).ToArray();
        var halves = Enumerable.Repeat((ushort)0x3c00, headDim).ToArray();
        for (int t = 0; t < 511; t++) rows.SetToken(t, headDim, w, all, halves);
        rows.SetToken(511, headDim, w, all.AsSpan(0, 127), halves.AsSpan(0, 127));
        Assert.Equal(65535, rows.Count);
        Assert.Throws<InvalidOperationException>(() => rows.SetToken(512, headDim, w, [5], [1]));
        Assert.Throws<InvalidOperationException>(() => rows.SetToken(511, headDim, w, all, halves));
        Assert.Equal(65535, rows.Count);
        // A rewrite of that many entries (a rented buffer rather than the stack) keeps every other token's entries.
        rows.SetToken(3, headDim, w, [7, 9], [0x1234, 0x4321]);
        Assert.Equal(65535 - 126, rows.Count);
        Assert.Equal(2, rows.TokenCount(3, headDim));
        Assert.Equal((3 * headDim + 9, (ushort)0x4321), rows.Entry(3 * headDim + 1));
        Assert.Equal((4 * headDim, (ushort)0x3c00), rows.Entry(3 * headDim + 2));
        Assert.Equal((511 * headDim + 126, (ushort)0x3c00), rows.Entry(rows.Count - 1));
    }

    [Fact]
    public void TheArenaKeepsWholeWordArraysUpToItsLimitAndHandsThemBackZeroed()
    {
        var arena = new OutlierBytes();
        // Lengths it does not keep: empty, not a multiple of 8, past MaxKeptArray.
        foreach (int n in new[] { 0, 12, OutlierBytes.MaxKeptArray + 8 })
        {
            var a = new byte[n];
            arena.Keep(a);
            Assert.NotSame(a, arena.Take(n));
            Assert.Equal(8, arena.Take(8).Length);   // a 12-byte array is not among the 8-byte ones
        }
        var small = Enumerable.Repeat((byte)0xA5, 16).ToArray();
        arena.Keep(small);
        var back = arena.Take(16);
        Assert.Same(small, back);
        Assert.All(back, b => Assert.Equal(0, b));
        Assert.NotSame(small, arena.Take(16));   // taken once
        var largest = new byte[OutlierBytes.MaxKeptArray];
        arena.Keep(largest);
        Assert.Same(largest, arena.Take(OutlierBytes.MaxKeptArray));

        // Up to KeptLimit bytes in all: exactly KeptLimit / MaxKeptArray arrays of the largest size, not one more.
        int fit = OutlierBytes.KeptLimit / OutlierBytes.MaxKeptArray;
        var kept = Enumerable.Range(0, fit + 1).Select(_ => Enumerable.Repeat((byte)7, OutlierBytes.MaxKeptArray).ToArray()).ToArray();
        foreach (var a in kept) arena.Keep(a);
        var set = new HashSet<byte[]>(kept, ReferenceEqualityComparer.Instance);
        int reused = Enumerable.Range(0, fit + 1).Count(_ => set.Contains(arena.Take(OutlierBytes.MaxKeptArray)));
        Assert.Equal(fit, reused);
        // Taking them back frees the room again.
        var again = new byte[OutlierBytes.MaxKeptArray];
        arena.Keep(again);
        Assert.Same(again, arena.Take(OutlierBytes.MaxKeptArray));
        Assert.Equal(0, arena.Total);
    }
}
