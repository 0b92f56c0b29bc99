using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Kvq.Formats.Llama2c;

/// <summary>
/// Identity of weight files for calibration profiles: SHA-256, first 16 bytes as lowercase hex (32 characters).
/// A file of at most <see cref="WholeFileLimit"/> bytes is hashed whole: these formats have no tensor table to
/// hash instead, and a profile silently applied to other weights is worse than ~0.5 s of hashing per GiB. A larger
/// file contributes its length, its first <see cref="SampleBytes"/> (header and first tensors) and
/// <see cref="Samples"/> more windows of <see cref="SampleBytes"/> spaced evenly, the last ending at its last byte, so a 28 GB
/// checkpoint costs 65 MiB of reads; any fine-tune or re-export changes the samples.
/// Shared by the llama2.c and safetensors loaders (it would sit better in Kvq.Formats).
/// </summary>
internal static class WeightsFingerprint
{
    public const long WholeFileLimit = 1L << 30;
    public const int SampleBytes = 1 << 20;
    public const int Samples = 64;
    private const int ChunkBytes = 1 << 26;

    public static IncrementalHash Begin(string scheme)
    {
        var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        h.AppendData(Encoding.UTF8.GetBytes("kvq-fingerprint-v1/" + scheme + "\n"));
        return h;
    }

    /// <summary>Adds a mapped file (whole or sampled, see the class summary) under a label, e.g. its file name.</summary>
    public static void AppendFile(IncrementalHash h, MappedFile file, string label) =>
        AppendFile(h, file, label, WholeFileLimit, SampleBytes);

    /// <summary>The same with other limits, so tests can reach the sampled path with a small file.</summary>
    internal static void AppendFile(IncrementalHash h, MappedFile file, string label, long wholeFileLimit, int sampleBytes)
    {
        h.AppendData(Encoding.UTF8.GetBytes(label + "\n"));
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(len, file.Length);
        h.AppendData(len);
        if (file.Length <= wholeFileLimit || file.Length < sampleBytes)
        {
            for (long at = 0; at < file.Length; at += ChunkBytes)
                h.AppendData(file.Span(at, (int)Math.Min(ChunkBytes, file.Length - at)));
            return;
        }
        h.AppendData(file.Span(0, sampleBytes));
        long last = file.Length - sampleBytes;
        for (int i = 0; i < Samples; i++)
            h.AppendData(file.Span(last * (i + 1) / Samples, sampleBytes));
    }

    public static string Finish(IncrementalHash h) => Convert.ToHexStringLower(h.GetHashAndReset().AsSpan(0, 16));
}
