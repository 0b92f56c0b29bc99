using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Kvq.Cache.Paging;

/// <summary>
/// Identity of a full block's content together with everything before it: SHA-256 of (parent hash, token ids),
/// truncated to 128 bits. Chaining makes equal hashes mean equal whole prefixes, not just equal blocks, so a prefix
/// lookup can stop at the first miss. 128 bits make an accidental collision (which would serve another prompt's
/// K/V) negligible at any cache size we will see; the bookkeeping does not keep token ids to double-check.
/// </summary>
public readonly record struct BlockHash(ulong Low, ulong High)
{
    // Above this many bytes the hash input is rented instead of stack-allocated (256 tokens per block and more).
    private const int MaxStackBytes = 1024;

    /// <summary>The parent of a sequence's first block.</summary>
    public static BlockHash Root => default;

    /// <summary>Hash of a full block holding <paramref name="tokens"/> (one block's worth of token ids) whose
    /// preceding block hashed to <paramref name="parent"/> (<see cref="Root"/> for the first block).</summary>
    public static BlockHash Of(BlockHash parent, ReadOnlySpan<int> tokens)
    {
        // Input layout: parent (16 bytes little-endian) then each token id as 4 bytes little-endian, so the hash does
        // not depend on the machine's byte order.
        int bytes = 16 + 4 * tokens.Length;
        byte[]? rented = null;
        Span<byte> input = bytes <= MaxStackBytes
            ? stackalloc byte[MaxStackBytes]
            : (rented = ArrayPool<byte>.Shared.Rent(bytes));
        input = input[..bytes];
        try
        {
            BinaryPrimitives.WriteUInt64LittleEndian(input, parent.Low);
            BinaryPrimitives.WriteUInt64LittleEndian(input[8..], parent.High);
            for (int i = 0; i < tokens.Length; i++)
                BinaryPrimitives.WriteInt32LittleEndian(input[(16 + 4 * i)..], tokens[i]);
            Span<byte> digest = stackalloc byte[SHA256.HashSizeInBytes];
            SHA256.HashData(input, digest);
            return new BlockHash(BinaryPrimitives.ReadUInt64LittleEndian(digest),
                BinaryPrimitives.ReadUInt64LittleEndian(digest[8..]));
        }
        finally
        {
            if (rented != null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    public override string ToString() => $"{High:x16}{Low:x16}";
}
