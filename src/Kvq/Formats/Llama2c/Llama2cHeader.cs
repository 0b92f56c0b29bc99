using System.Buffers.Binary;

namespace Kvq.Formats.Llama2c;

/// <summary>
/// The header of a legacy (version 0) llama2.c checkpoint: 7 little-endian int32 (dim, hidden_dim, n_layers,
/// n_heads, n_kv_heads, vocab_size, seq_len), then f32 arrays in the order of <see cref="Tensors"/>. A negative
/// vocab_size means the classifier is not shared with the token embedding and is stored last ("wcls").
/// </summary>
public sealed record Llama2cHeader
{
    public const int ByteSize = 7 * sizeof(int);

    /// <summary>"ak42" read as a little-endian uint32: the first word of llama2.c's versioned (v1+) exports.</summary>
    public const uint VersionedMagic = 0x616b3432;

    private static readonly string[] FieldNames = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];

    public required int Dim { get; init; }
    public required int HiddenDim { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int VocabSize { get; init; }          // |vocab_size| as stored
    public required bool SharedClassifier { get; init; }  // vocab_size > 0 in the file
    public required int SeqLen { get; init; }
    public int HeadSize => Dim / Heads;
    public int KvDim => KvHeads * HeadSize;

    /// <summary>The f32 arrays in file order, with byte offsets from the start of the file.</summary>
    public IReadOnlyList<Llama2cTensor> Tensors
    {
        get
        {
            var list = new List<Llama2cTensor>(14);
            long at = ByteSize;
            foreach (var (name, perLayer, shape) in Layout())
            {
                var t = new Llama2cTensor(name, at, shape, perLayer);
                list.Add(t);
                at = t.End;
            }
            return list;
        }
    }

    private IEnumerable<(string Name, bool PerLayer, int[] Shape)> Layout()
    {
        int l = Layers, d = Dim, kv = KvDim, h = HiddenDim;
        yield return ("token_embedding_table", false, [VocabSize, d]);
        yield return ("rms_att_weight", true, [l, d]);
        yield return ("wq", true, [l, d, d]);
        yield return ("wk", true, [l, kv, d]);
        yield return ("wv", true, [l, kv, d]);
        yield return ("wo", true, [l, d, d]);
        yield return ("rms_ffn_weight", true, [l, d]);
        yield return ("w1", true, [l, h, d]);
        yield return ("w2", true, [l, d, h]);
        yield return ("w3", true, [l, h, d]);
        yield return ("rms_final_weight", false, [d]);
        // Precomputed RoPE tables of old exports; run.c skips them and so do we (RoPE is recomputed).
        yield return ("freq_cis_real", false, [SeqLen, HeadSize / 2]);
        yield return ("freq_cis_imag", false, [SeqLen, HeadSize / 2]);
        if (!SharedClassifier) yield return ("wcls", false, [VocabSize, d]);
    }

    /// <summary>The exact length in bytes of a file with this header.</summary>
    public long FileLength => Tensors[^1].End;

    /// <summary>Parses and validates the header; <paramref name="fileLength"/> is checked against the declared sizes.</summary>
    public static Llama2cHeader Read(string path, ReadOnlySpan<byte> bytes, long fileLength)
    {
        if (bytes.Length < ByteSize)
            throw new ModelFormatException(path, "header", 0,
                $"expected at least {ByteSize} bytes (7 int32: {string.Join(", ", FieldNames)}), found {bytes.Length}");
        if (BinaryPrimitives.ReadUInt32LittleEndian(bytes) == VersionedMagic)
            throw new ModelFormatException(path, "header", 0,
                $"expected the legacy version-0 layout (7 int32 sizes), found the magic 'ak42' of llama2.c's versioned " +
                $"export, version {BinaryPrimitives.ReadInt32LittleEndian(bytes[4..])}; re-export with --version 0");

        var f = new int[7];
        for (int i = 0; i < 7; i++) f[i] = BinaryPrimitives.ReadInt32LittleEndian(bytes[(i * 4)..]);
        ModelFormatException Field(int i, string expected) =>
            new(path, $"header field '{FieldNames[i]}'", i * 4, $"expected {expected}, found {f[i]}");
        for (int i = 0; i < 7; i++)
        {
            if (i == 5 ? f[i] is 0 or int.MinValue : f[i] <= 0)
                throw Field(i, i == 5 ? "a non-zero vocabulary size (negative = unshared classifier)" : "a positive value");
        }
        if (f[0] % f[3] != 0) throw Field(3, $"a divisor of dim {f[0]}");
        if (f[0] / f[3] % 2 != 0) throw Field(3, $"a head count giving an even head size for RoPE (dim {f[0]} / n_heads = {f[0] / f[3]})");
        if (f[3] % f[4] != 0) throw Field(4, $"a divisor of n_heads {f[3]}");

        var header = new Llama2cHeader
        {
            Dim = f[0], HiddenDim = f[1], Layers = f[2], Heads = f[3], KvHeads = f[4],
            VocabSize = Math.Abs(f[5]), SharedClassifier = f[5] > 0, SeqLen = f[6],
        };
        header.CheckSizes(path, fileLength);
        return header;
    }

    private void CheckSizes(string path, long fileLength)
    {
        // One slice (a layer's matrix) must hold at most int.MaxValue elements (spans, WeightMatrix) and the file must
        // fit a long. Positive int32 sizes multiply up to ~2^93, so check in 128-bit before computing long offsets.
        Int128 total = ByteSize;
        foreach (var (name, perLayer, shape) in Layout())
        {
            Int128 slice = 1;
            for (int i = perLayer ? 1 : 0; i < shape.Length; i++) slice *= shape[i];
            if (slice > int.MaxValue)
                throw new ModelFormatException(path, $"tensor '{name}'", 0,
                    $"expected at most {int.MaxValue} elements per matrix, found {slice} from the header's sizes");
            total += slice * (perLayer ? shape[0] : 1) * sizeof(float);
        }
        if (total > long.MaxValue)
            throw new ModelFormatException(path, "header", 0, $"expected sizes that fit in a file, found {total} bytes of tensors declared");

        var tensors = Tensors;
        foreach (var t in tensors)
        {
            if (t.End <= fileLength) continue;
            int slice = (int)Math.Max(0, (fileLength - t.Offset) / t.SliceBytes);
            string item = t.PerLayer ? $"tensor '{t.Name}' (layer {slice} of {t.Slices})" : $"tensor '{t.Name}'";
            throw new ModelFormatException(path, item, t.SliceOffset(slice),
                $"expected {t.ByteSize} bytes of f32 {t.ShapeText} at [{t.Offset}, {t.End}), but the file ends at " +
                $"{fileLength} (truncated, or the header's sizes are wrong){ClassifierHint(fileLength)}");
        }
        long expected = tensors[^1].End;
        if (fileLength > expected)
            throw new ModelFormatException(path, "end of data", expected,
                $"expected the file to end at {expected} bytes after '{tensors[^1].Name}', found {fileLength} bytes " +
                $"({fileLength - expected} extra){ClassifierHint(fileLength)}");
    }

    private string ClassifierHint(long fileLength)
    {
        long wcls = (long)VocabSize * Dim * 4;
        long expected = FileLength;
        if (SharedClassifier && fileLength == expected + wcls)
            return "; that is exactly one more (vocab, dim) classifier: an unshared classifier is declared by a negative vocab_size";
        if (!SharedClassifier && fileLength == expected - wcls)
            return "; that is exactly one (vocab, dim) classifier short: a shared classifier is declared by a positive vocab_size";
        return "";
    }
}
