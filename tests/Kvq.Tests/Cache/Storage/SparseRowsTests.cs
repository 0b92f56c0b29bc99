using Kvq.Cache.Storage;

namespace Kvq.Tests.Cache.Storage;

/// <summary><see cref="SparseRows.Check"/>, the one walk the session file reader and the prefix block files use: dense
/// bytes then exactly N (length, rows) entries that end at the last byte.</summary>
public sealed class SparseRowsTests
{
    /// <summary>Random dense bytes and N entries of random lengths (some empty) written with <see cref="SparseRows.Write"/>.</summary>
    private static byte[] Item(int dense, int entries, int seed)
    {
        var rng = new Random(seed);
        var rows = Enumerable.Range(0, entries).Select(_ => new byte[rng.Next(4) == 0 ? 0 : rng.Next(1, 40)]).ToArray();
        foreach (var r in rows) rng.NextBytes(r);
        var bytes = new byte[dense + rows.Sum(r => 4 + r.Length)];
        rng.NextBytes(bytes.AsSpan(0, dense));
        int at = dense;
        foreach (var r in rows) at = SparseRows.Write(bytes, at, r);
        return bytes;
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(37, 3)]
    [InlineData(96, 8)]
    public void AWellFormedItemPassesAndEveryCutOrExtraByteFails(int dense, int entries)
    {
        var bytes = Item(dense, entries, TestSeeds.Of(nameof(SparseRowsTests), dense, entries));
        Assert.Null(SparseRows.Check(bytes, dense, entries));
        // One entry fewer than written leaves bytes over; one more runs past the end.
        Assert.Contains("bytes after the last sparse rows", SparseRows.Check(bytes, dense, entries - 1));
        Assert.Contains($"sparse rows {entries} of {entries + 1} run past", SparseRows.Check(bytes, dense, entries + 1));
        // Cut anywhere inside the entries: refused, never read past the end.
        for (int cut = dense; cut < bytes.Length; cut++)
            Assert.NotNull(SparseRows.Check(bytes.AsSpan(0, cut), dense, entries));
        Assert.Contains("1 bytes after", SparseRows.Check([.. bytes, 7], dense, entries));
        if (dense > 0) Assert.Contains("less than the", SparseRows.Check(bytes.AsSpan(0, dense - 1), dense, entries));
    }

    [Fact]
    public void ANegativeLengthIsRefused()
    {
        var bytes = Item(8, 2, 5);
        BitConverter.TryWriteBytes(bytes.AsSpan(8), -1);
        Assert.Contains("sparse rows 0 of 2 run past", SparseRows.Check(bytes, 8, 2));
    }
}
