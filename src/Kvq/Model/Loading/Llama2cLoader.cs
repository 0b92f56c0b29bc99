using Kvq.Formats;
using Kvq.Formats.Llama2c;
using Kvq.Tensors;

namespace Kvq.Model.Loading;

/// <summary>
/// Maps a legacy (version 0) llama2.c checkpoint onto <see cref="ModelWeights"/>. Matrices point into the memory map
/// (f32, no copy); norms are small and copied. Q/K rows are used as stored with <see cref="RopeStyle.Normal"/>:
/// llama2.c rotates adjacent pairs (2i, 2i+1), and stories260K.bin's wq/wk are byte-identical, row for row, to
/// the attn_q/attn_k of its llama.cpp GGUF conversion, which llama.cpp runs with its "normal" adjacent-pair RoPE.
/// run.c hard-codes RoPE base 10000 and RMSNorm epsilon 1e-5; the file stores neither.
/// </summary>
public static unsafe class Llama2cLoader
{
    public const float RopeBase = 10000f;
    public const float NormEps = 1e-5f;

    public static ModelWeights Load(string checkpointPath)
    {
        var map = new MappedFile(checkpointPath);
        try { return Load(map); }
        catch { map.Dispose(); throw; }
    }

    /// <summary>Reads and validates the header of a checkpoint without mapping its weights.</summary>
    public static Llama2cHeader ReadHeader(string checkpointPath)
    {
        using var fs = new FileStream(checkpointPath, FileMode.Open, FileAccess.Read, FileShare.Read);
        var bytes = new byte[Llama2cHeader.ByteSize];
        int n = fs.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
        return Llama2cHeader.Read(checkpointPath, bytes.AsSpan(0, n), fs.Length);
    }

    public static ModelConfig ConfigOf(Llama2cHeader h) => new()
    {
        Architecture = "llama",
        Dim = h.Dim,
        Layers = h.Layers,
        Heads = h.Heads,
        KvHeads = h.KvHeads,
        HeadDim = h.HeadSize,
        FfnDim = h.HiddenDim,
        VocabSize = h.VocabSize,
        NormEps = NormEps,
        RopeBase = RopeBase,
        RopeDims = h.HeadSize,
        RopeStyle = RopeStyle.Normal,
        ContextLength = h.SeqLen,
    };

    /// <summary>Builds the weights over an open map; the weights take ownership of it.</summary>
    private static ModelWeights Load(MappedFile map)
    {
        string path = map.Path;
        var header = Llama2cHeader.Read(path, map.Span(0, (int)Math.Min(Llama2cHeader.ByteSize, map.Length)), map.Length);
        var config = ConfigOf(header);
        config.Validate(path);
        var t = new Dictionary<string, Llama2cTensor>(StringComparer.Ordinal);
        foreach (var x in header.Tensors) t[x.Name] = x;

        WeightMatrix Matrix(string name, int layer)
        {
            var x = t[name];
            int rows = x.Shape[^2], cols = x.Shape[^1];
            string label = x.PerLayer ? $"{name}[{layer}]" : name;
            return new WeightMatrix(label, rows, cols, GgmlType.F32, map.Pointer + x.SliceOffset(layer), map);
        }

        float[] Norm(string name, int layer)
        {
            var x = t[name];
            long at = x.SliceOffset(layer);
            var v = new ReadOnlySpan<float>(map.Pointer + at, (int)x.SliceElements).ToArray();
            for (int i = 0; i < v.Length; i++)
                if (!float.IsFinite(v[i]))
                    throw new ModelFormatException(path, x.PerLayer ? $"tensor '{name}' (layer {layer})" : $"tensor '{name}'",
                        at + i * sizeof(float), $"expected finite norm weights, found {v[i]} at element {i}");
            return v;
        }

        var layers = new LayerWeights[header.Layers];
        for (int l = 0; l < layers.Length; l++)
        {
            layers[l] = new LayerWeights
            {
                AttnNorm = Norm("rms_att_weight", l),
                Wq = Matrix("wq", l),
                Wk = Matrix("wk", l),
                Wv = Matrix("wv", l),
                Wo = Matrix("wo", l),
                FfnNorm = Norm("rms_ffn_weight", l),
                WGate = Matrix("w1", l),
                WDown = Matrix("w2", l),
                WUp = Matrix("w3", l),
            };
        }
        var embedding = Matrix("token_embedding_table", 0);
        return new ModelWeights
        {
            Config = config,
            TokenEmbedding = embedding,
            Layers = layers,
            OutputNorm = Norm("rms_final_weight", 0),
            Output = header.SharedClassifier ? embedding : Matrix("wcls", 0),
            Owner = map,
            Fingerprint = Fingerprint(map),
            SourcePath = path,
        };
    }

    /// <summary>See <see cref="WeightsFingerprint"/>: the whole file up to 1 GiB (every llama2.c model but the 7B exports), sampled above.</summary>
    private static string Fingerprint(MappedFile map)
    {
        using var h = WeightsFingerprint.Begin("llama2c");
        WeightsFingerprint.AppendFile(h, map, "checkpoint");
        return WeightsFingerprint.Finish(h);
    }
}
