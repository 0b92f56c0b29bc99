using System.Security.Cryptography;
using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

public class BlockHashTests
{
    /// <summary>Reference twin: SHA-256 over (parent low, parent high, tokens) little-endian, first 16 bytes.</summary>
    internal static BlockHash Reference(BlockHash parent, ReadOnlySpan<int> tokens)
    {
        var bytes = new List<byte>();
        bytes.AddRange(BitConverter.GetBytes(parent.Low));
        bytes.AddRange(BitConverter.GetBytes(parent.High));
        foreach (int t in tokens) bytes.AddRange(BitConverter.GetBytes(t));
        byte[] d = SHA256.HashData(bytes.ToArray());
        return new BlockHash(BitConverter.ToUInt64(d, 0), BitConverter.ToUInt64(d, 8));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(16)]
    [InlineData(252)] // 1024 bytes of input: the last size hashed from the stack
    [InlineData(253)] // first size hashed from a rented buffer
    [InlineData(1000)]
    public void MatchesReference(int tokensPerBlock)
    {
        Assert.True(BitConverter.IsLittleEndian, "the reference twin assumes a little-endian machine");
        var rng = new Random(tokensPerBlock);
        var tokens = new int[tokensPerBlock];
        for (int i = 0; i < tokens.Length; i++) tokens[i] = rng.Next(int.MinValue, int.MaxValue);
        var parent = new BlockHash((ulong)rng.NextInt64(), (ulong)rng.NextInt64());
        Assert.Equal(Reference(parent, tokens), BlockHash.Of(parent, tokens));
        Assert.Equal(Reference(BlockHash.Root, tokens), BlockHash.Of(BlockHash.Root, tokens));
    }

    [Fact]
    public void EveryTokenAndTheParentMatter()
    {
        int[] tokens = { 5, 17, 2, 99, 3 };
        var parent = BlockHash.Of(BlockHash.Root, new[] { 1, 2, 3, 4, 5 });
        var baseline = BlockHash.Of(parent, tokens);
        Assert.Equal(baseline, BlockHash.Of(parent, (int[])tokens.Clone()));
        Assert.NotEqual(baseline, BlockHash.Of(BlockHash.Root, tokens));
        for (int i = 0; i < tokens.Length; i++)
        {
            var changed = (int[])tokens.Clone();
            changed[i]++;
            Assert.NotEqual(baseline, BlockHash.Of(parent, changed));
        }
        int[] swapped = { 17, 5, 2, 99, 3 };
        Assert.NotEqual(baseline, BlockHash.Of(parent, swapped));
        Assert.NotEqual(baseline, BlockHash.Of(parent, tokens.AsSpan(0, 4)));
    }
}
