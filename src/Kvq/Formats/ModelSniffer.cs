using System.Buffers.Binary;
using System.Text;
using Kvq.Formats.Gguf;
using Kvq.Formats.Llama2c;

namespace Kvq.Formats;

/// <summary>The kinds of model input that <c>Kvq.Model.ModelLoader</c> reads.</summary>
public enum ModelFormat { Gguf, Llama2c, HuggingFaceFolder }

/// <summary>What a path holds, decided by its content (magic bytes and structure), never by its name.</summary>
/// <param name="Path">What to load: the path given, or for a safetensors file in a model folder or a Hugging Face cache
/// root with one snapshot, that folder.</param>
public sealed record SniffedModel(ModelFormat Format, string Path);

/// <summary>
/// Recognises a model by what its bytes are: GGUF by its magic, a safetensors file by its 8-byte header length and
/// JSON header, a Hugging Face folder by its config.json, a llama2.c checkpoint by a header of seven plausible sizes.
/// Anything else is a <see cref="NotAModelException"/> that says what the input looks like instead (a text file, a
/// tokenizer, a lone safetensors file, a folder without config.json, ...). Symbolic links are followed.
/// </summary>
public static class ModelSniffer
{
    private const int SniffBytes = 4096;
    /// <summary>Largest size a llama2.c header field may hold and still be taken for a checkpoint (2^24).</summary>
    private const int MaxLlama2cField = 1 << 24;

    public static SniffedModel Detect(string path)
    {
        if (Directory.Exists(path)) return DetectFolder(path);
        if (!File.Exists(path)) throw Missing(path);
        MappedFile.ResolveLinks(path); // a dangling link says where it points
        var head = ReadHead(path, out long length);
        if (length == 0) throw new NotAModelException(path, "an empty file");
        if (head.Length >= 4 && BinaryPrimitives.ReadUInt32LittleEndian(head) == GgufFile.Magic)
            return new SniffedModel(ModelFormat.Gguf, path);
        if (IsSafetensors(head, length)) return SafetensorsFile(path);
        if (IsLlama2cCheckpoint(head)) return new SniffedModel(ModelFormat.Llama2c, path);
        throw new NotAModelException(path, Describe(path, head, length));
    }

    /// <summary>"model file not found", or for a symbolic link whose target is gone, where it points.</summary>
    public static FileNotFoundException Missing(string path) => new FileInfo(path).LinkTarget is { } target
        ? new FileNotFoundException($"model not found: {path} is a symbolic link to {target}, which does not exist", path)
        : new FileNotFoundException($"model file not found: {path}", path);

    private static byte[] ReadHead(string path, out long length)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        length = fs.Length;
        var buf = new byte[(int)Math.Min(SniffBytes, length)];
        int n = fs.ReadAtLeast(buf, buf.Length, throwOnEndOfStream: false);
        return buf[..n];
    }

    private static SniffedModel DetectFolder(string dir)
    {
        if (File.Exists(Path.Combine(dir, Safetensors.HfFolder.ConfigFileName)))
            return new SniffedModel(ModelFormat.HuggingFaceFolder, dir);
        // A Hugging Face cache root (models--org--name): snapshots/<revision>/ holds the model.
        var snapshots = Path.Combine(dir, "snapshots");
        if (Directory.Exists(snapshots))
        {
            var revisions = Directory.GetDirectories(snapshots)
                .Where(d => File.Exists(Path.Combine(d, Safetensors.HfFolder.ConfigFileName))).ToList();
            if (revisions.Count == 1) return new SniffedModel(ModelFormat.HuggingFaceFolder, revisions[0]);
            throw new NotAModelException(dir, revisions.Count == 0
                ? "a Hugging Face cache folder with no downloaded snapshot (no snapshots/*/config.json)"
                : $"a Hugging Face cache folder with {revisions.Count} snapshots: pass one of them ({string.Join(", ", revisions.Select(d => Path.GetFileName(d)).Order(StringComparer.Ordinal))})");
        }
        var models = Directory.GetFiles(dir, "*.gguf").Concat(Directory.GetFiles(dir, "*.bin")).Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToList();
        if (Directory.GetFiles(dir, "*.safetensors").Length > 0)
            throw new NotAModelException(dir, "a folder of safetensors weights without the config.json a Hugging Face model folder needs");
        if (models.Count > 0)
            throw new NotAModelException(dir, $"a folder without config.json (not a Hugging Face model folder); pass one of its files instead ({string.Join(", ", models.Take(5))})");
        throw new NotAModelException(dir, "a folder without config.json (not a Hugging Face model folder)");
    }

    /// <summary>8-byte little-endian header length N, then N bytes of JSON starting with '{', within the file.</summary>
    private static bool IsSafetensors(ReadOnlySpan<byte> head, long length)
    {
        if (head.Length < 9) return false;
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(head);
        return n >= 2 && n <= (ulong)(length - 8) && head[8] == (byte)'{';
    }

    /// <summary>A safetensors file is loaded with the folder around it when that folder is a model folder.</summary>
    private static SniffedModel SafetensorsFile(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (File.Exists(Path.Combine(dir, Safetensors.HfFolder.ConfigFileName)))
            return new SniffedModel(ModelFormat.HuggingFaceFolder, dir);
        throw new NotAModelException(path,
            "a lone safetensors file: its folder has no config.json (a Hugging Face model needs config.json, the weights and tokenizer.json together)");
    }

    /// <summary>Seven int32 sizes, each in a plausible range (vocab_size may be negative), or llama2.c's versioned magic;
    /// the loader then checks them against each other and the file length.</summary>
    private static bool IsLlama2cCheckpoint(ReadOnlySpan<byte> head)
    {
        if (head.Length < 4) return false;
        if (BinaryPrimitives.ReadUInt32LittleEndian(head) == Llama2cHeader.VersionedMagic) return true;
        if (head.Length < Llama2cHeader.ByteSize) return false;
        for (int i = 0; i < 7; i++)
        {
            int v = BinaryPrimitives.ReadInt32LittleEndian(head[(i * 4)..]);
            if (i == 5 ? v == 0 || Math.Abs((long)v) > MaxLlama2cField : v <= 0 || v > MaxLlama2cField) return false;
        }
        return true;
    }

    /// <summary>What a file that is not a model looks like, in the user's terms.</summary>
    private static string Describe(string path, byte[] head, long length)
    {
        string name = Path.GetFileName(path);
        if (head.Length >= 4 && head[0] == (byte)'P' && head[1] == (byte)'K' && head[2] == 3 && head[3] == 4)
            return "a zip archive (a PyTorch .pt/.pth checkpoint is one: convert it to GGUF or safetensors)";
        if (head.Length >= 2 && head[0] == 0x1f && head[1] == 0x8b) return "a gzip-compressed file (decompress it first)";
        if (head.Length >= 2 && head[0] == 0x80 && head[1] is >= 2 and <= 5) return "a Python pickle (a PyTorch checkpoint: convert it to GGUF or safetensors)";
        if (IsLlama2cTokenizer(head)) return "a llama2.c tokenizer (tok*.bin): pass it as the tokenizer and the checkpoint as the model";
        if (LooksLikeText(head))
        {
            var text = Encoding.UTF8.GetString(head).TrimStart('\uFEFF', ' ', '\t', '\r', '\n');
            if (text.StartsWith('{'))
            {
                if (text.Contains("\"added_tokens\"", StringComparison.Ordinal) || (text.Contains("\"model\"", StringComparison.Ordinal) && text.Contains("\"vocab\"", StringComparison.Ordinal)))
                    return "a Hugging Face tokenizer (tokenizer.json): pass the model folder that holds it";
                if (text.Contains("\"architectures\"", StringComparison.Ordinal) || text.Contains("\"model_type\"", StringComparison.Ordinal))
                    return $"a Hugging Face model config ({name}): pass the folder that holds it";
                if (text.Contains("\"weight_map\"", StringComparison.Ordinal))
                    return "a safetensors index (model.safetensors.index.json): pass the folder that holds it";
                return "a JSON file";
            }
            return $"a text file ({length:N0} bytes)";
        }
        return $"binary data of no known model format ({length:N0} bytes, starting {Convert.ToHexString(head.AsSpan(0, Math.Min(8, head.Length)))})";
    }

    /// <summary>llama2.c's tokenizer: int32 max_token_length, then (f32 score, int32 length, bytes) per token.</summary>
    private static bool IsLlama2cTokenizer(ReadOnlySpan<byte> head)
    {
        if (head.Length < 16) return false;
        int maxLen = BinaryPrimitives.ReadInt32LittleEndian(head);
        if (maxLen is <= 0 or > 1024) return false;
        int at = 4, entries = 0;
        while (at + 8 <= head.Length && entries < 8)
        {
            float score = BinaryPrimitives.ReadSingleLittleEndian(head[at..]);
            int len = BinaryPrimitives.ReadInt32LittleEndian(head[(at + 4)..]);
            if (!float.IsFinite(score) || len <= 0 || len > maxLen) return false;
            at += 8 + len;
            entries++;
        }
        return entries >= 2;
    }

    /// <summary>No NUL bytes and almost all bytes printable or whitespace (UTF-8 multibyte sequences count as text).</summary>
    private static bool LooksLikeText(ReadOnlySpan<byte> head)
    {
        if (head.IndexOf((byte)0) >= 0) return false;
        int control = 0;
        foreach (var b in head)
            if (b < 0x20 && b is not ((byte)'\n' or (byte)'\r' or (byte)'\t' or 0x0c)) control++;
        return control * 100 <= head.Length;
    }
}

/// <summary>The input is none of the model formats kvq reads; <see cref="LooksLike"/> says what it seems to be.</summary>
public sealed class NotAModelException(string path, string looksLike)
    : Exception($"{path} is not a model: it looks like {looksLike}. Expected a GGUF file, a llama2.c checkpoint (.bin) or a Hugging Face model folder (config.json + *.safetensors)")
{
    public string FilePath { get; } = path;
    public string LooksLike { get; } = looksLike;
}
