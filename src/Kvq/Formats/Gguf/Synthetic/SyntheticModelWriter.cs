using System.Runtime.InteropServices;
using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>
/// Writes a <see cref="SyntheticModelSpec"/> as a GGUF file: the shared decoder keys, the architecture's keys, the
/// vocabulary, then random tensors drawn from one seeded generator in the order the architecture lists them (so the same
/// spec always gives the same bytes). Matrices are written in the spec's weight type through ggml's reference
/// quantizers (<see cref="QuantFormats.Quantize"/>), so llama.cpp and Kvq read the same quantized values.
/// </summary>
public static class SyntheticModelWriter
{
    public static GgufWriter Build(SyntheticModelSpec s)
    {
        Check(s);
        var w = new GgufWriter();
        foreach (var m in Metadata(s)) w.AddRaw(m.Key, m.Type, m.Value);
        var rng = new Random(s.Seed);
        var tensors = s.Architecture.GlobalTensors(s)
            .Concat(Enumerable.Range(0, s.Layers).SelectMany(l => s.Architecture.LayerTensors(s, l)))
            .Concat(s.ExtraTensors);
        var written = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (written.ContainsKey(t.Name)) throw new ArgumentException($"synthetic model '{s.Name}': tensor '{t.Name}' is listed twice");
            var values = Values(t, rng);
            if (t.Echo != null && t.EchoGain != 0) AddEcho(s, t, values, written, rng);
            written[t.Name] = values;
            var type = TypeOf(s, t);
            if (type == GgmlType.F32) w.AddTensor(t.Name, t.Dims, values);
            else w.AddTensor(t.Name, t.Dims, type, Encode(type, values));
        }
        return w;
    }

    /// <summary>Writes <c>{dir}/{spec.Name}.gguf</c> (atomically) and returns its path.</summary>
    public static string Write(SyntheticModelSpec s, string dir)
    {
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, s.Name + ".gguf");
        Build(s).Save(path);
        return path;
    }

    /// <summary>Every metadata entry of the file, in order: general, shared decoder keys, architecture, extra, vocabulary.</summary>
    public static IEnumerable<SyntheticMetadata> Metadata(SyntheticModelSpec s)
    {
        yield return SyntheticMetadata.Str("general.architecture", s.Arch);
        yield return SyntheticMetadata.Str("general.name", s.Name);
        yield return SyntheticMetadata.U32("general.alignment", 32);
        yield return SyntheticMetadata.U32(s.Key("context_length"), s.ContextLength);
        yield return SyntheticMetadata.U32(s.Key("embedding_length"), s.Dim);
        yield return SyntheticMetadata.U32(s.Key("block_count"), s.Layers);
        yield return SyntheticMetadata.U32(s.Key("feed_forward_length"), s.FfnDim);
        yield return SyntheticMetadata.U32(s.Key("attention.head_count"), s.Heads);
        yield return SyntheticMetadata.U32(s.Key("attention.head_count_kv"), s.KvHeads);
        if (s.HeadWidth * s.Heads != s.Dim)
        {
            yield return SyntheticMetadata.U32(s.Key("attention.key_length"), s.HeadWidth);
            yield return SyntheticMetadata.U32(s.Key("attention.value_length"), s.HeadWidth);
        }
        yield return SyntheticMetadata.F32(s.Key("attention.layer_norm_rms_epsilon"), s.NormEps);
        yield return SyntheticMetadata.F32(s.Key("rope.freq_base"), s.RopeBase);
        yield return SyntheticMetadata.U32(s.Key("rope.dimension_count"), s.RotaryDims);
        foreach (var m in s.Architecture.Metadata(s)) yield return m;
        foreach (var m in s.ExtraMetadata) yield return m;
        foreach (var m in s.Vocabulary.Metadata()) yield return m;
    }

    private static void Check(SyntheticModelSpec s)
    {
        void Need(bool ok, string what)
        {
            if (!ok) throw new ArgumentException($"synthetic model '{s.Name}': {what}");
        }
        Need(s.Dim > 0 && s.Layers > 0 && s.Heads > 0 && s.KvHeads > 0 && s.FfnDim > 0, "sizes must be positive");
        Need(s.Heads % s.KvHeads == 0, $"heads {s.Heads} is not a multiple of kv heads {s.KvHeads}");
        Need(s.HeadWidth % 2 == 0 && s.RotaryDims % 2 == 0 && s.RotaryDims <= s.HeadWidth, $"head dim {s.HeadWidth} and rope dims {s.RotaryDims} must be even, rope dims <= head dim");
        Need(s.WeightType == GgmlType.F32 || s.WeightType == GgmlType.F16 || QuantFormats.CanQuantize(s.WeightType),
            $"weight type {s.WeightType} cannot be written (f32, f16, or one of the quantizers in QuantFormats)");
    }

    /// <summary>The spec's weight type for matrices and embeddings whose rows fit its blocks; f32 for the rest.</summary>
    private static GgmlType TypeOf(SyntheticModelSpec s, SyntheticTensor t)
    {
        if (t.Init is not (SyntheticInit.Matrix or SyntheticInit.Embedding) || s.WeightType == GgmlType.F32) return GgmlType.F32;
        // llama-quantize never quantizes an expert router (ffn_gate_inp): published MoE files keep it in f32/f16, and
        // a quantized router would let activation rounding flip near-tied expert choices between engines.
        if (t.Name.EndsWith(".ffn_gate_inp.weight", StringComparison.Ordinal)) return GgmlType.F32;
        return t.Dims[0] % GgmlTypeInfo.BlockSize(s.WeightType) == 0 ? s.WeightType : GgmlType.F32;
    }

    private static float[] Values(SyntheticTensor t, Random rng)
    {
        long n = 1;
        foreach (var d in t.Dims) n *= d;
        if (t.Init == SyntheticInit.Values)
        {
            if (t.Values is null || t.Values.Length != n) throw new ArgumentException($"tensor '{t.Name}': {n} values needed, {t.Values?.Length ?? 0} given");
            return (float[])t.Values.Clone();
        }
        // Uniform on [-a, a] has variance a^2 / 3: a = gain * sqrt(3 / fanIn) gives variance gain^2 / fanIn.
        float a = t.Init switch
        {
            SyntheticInit.Matrix => t.Gain * MathF.Sqrt(3f / t.Dims[0]),
            _ => t.Gain,
        };
        float center = t.Init == SyntheticInit.Norm ? t.NormCenter : 0f;
        var v = new float[n];
        for (long i = 0; i < n; i++) v[i] = center + (float)(rng.NextDouble() * 2 - 1) * a;
        return v;
    }

    /// <summary>values[row r] += EchoGain sqrt(3 / fan-in) source[row perm(r)]: source rows are uniform +-1 (variance 1/3).</summary>
    private static void AddEcho(SyntheticModelSpec s, SyntheticTensor t, float[] values, Dictionary<string, float[]> written, Random rng)
    {
        if (!written.TryGetValue(t.Echo!, out var src) || src.Length != values.Length)
            throw new ArgumentException($"synthetic model '{s.Name}': tensor '{t.Name}' echoes '{t.Echo}', which must come before it with the same shape");
        int cols = (int)t.Dims[0], rows = values.Length / cols;
        var perm = new int[rows];
        for (int i = 0; i < rows; i++) perm[i] = i;
        rng.Shuffle(perm);
        float g = t.EchoGain * MathF.Sqrt(3f / cols);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) values[(long)r * cols + c] += g * src[(long)perm[r] * cols + c];
    }

    private static byte[] Encode(GgmlType type, float[] values)
    {
        if (type == GgmlType.F16)
        {
            var h = new Half[values.Length];
            for (int i = 0; i < h.Length; i++) h[i] = (Half)values[i];
            return MemoryMarshal.AsBytes(h.AsSpan()).ToArray();
        }
        var bytes = new byte[GgmlTypeInfo.RowBytes(type, values.Length)];
        QuantFormats.Quantize(type, values, bytes);
        return bytes;
    }
}
