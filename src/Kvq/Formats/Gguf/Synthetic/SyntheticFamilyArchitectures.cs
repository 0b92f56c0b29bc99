using static Kvq.Formats.Gguf.Synthetic.SyntheticTensor;

namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>
/// Descriptors for the fused-tensor and mixture-of-experts families, with llama.cpp's tensor names and shapes
/// (llama-arch.cpp, llama-model.cpp): Phi-3 (attn_qkv, ffn_up holding gate and up), Mixtral (a llama file with stacked
/// expert tensors) and Qwen2-MoE (experts plus a sigmoid-gated shared expert).
/// </summary>
public static class SyntheticFamilyArchitectures
{
    /// <summary>Phi-3: neox RoPE, q|k|v in one matrix, gate|up in one matrix (llama.cpp applies silu to the first half).</summary>
    public static readonly SyntheticArchitecture Phi3 = new()
    {
        Name = "phi3",
        GlobalTensors = SyntheticArchitectures.EmbeddingAndOutput,
        LayerTensors = Phi3Layer,
    };

    /// <summary>Mixtral: general.architecture "llama" with expert_count / expert_used_count; every expert's width is
    /// feed_forward_length, the router renormalises the chosen experts' probabilities.</summary>
    public static readonly SyntheticArchitecture Mixtral = new()
    {
        Name = "llama",
        Metadata = s => ExpertCounts(s),
        GlobalTensors = SyntheticArchitectures.EmbeddingAndOutput,
        LayerTensors = (s, l) => SyntheticArchitectures.Attention(s, l)
            .Append(Norm($"blk.{l}.ffn_norm.weight", s.Dim))
            .Concat(Experts(s, l, s.FfnDim)),
    };

    /// <summary>Qwen2-MoE: neox RoPE, q/k/v biases; experts of width expert_feed_forward_length whose softmax weights are
    /// not renormalised, plus a shared expert of width <see cref="SyntheticModelSpec.FfnDim"/> scaled by
    /// sigmoid(ffn_gate_inp_shexp · x).</summary>
    public static readonly SyntheticArchitecture Qwen2Moe = new()
    {
        Name = "qwen2moe",
        Metadata = s => ExpertCounts(s).Concat(
        [
            SyntheticMetadata.U32(s.Key("expert_feed_forward_length"), s.ExpertFfnDim),
            SyntheticMetadata.U32(s.Key("expert_shared_feed_forward_length"), s.FfnDim),
        ]),
        GlobalTensors = SyntheticArchitectures.EmbeddingAndOutput,
        LayerTensors = (s, l) => SyntheticArchitectures.Attention(s, l)
            .Append(Norm($"blk.{l}.ffn_norm.weight", s.Dim))
            .Concat(Experts(s, l, s.ExpertFfnDim))
            .Concat(SharedExpert(s, l)),
    };

    private static IEnumerable<SyntheticTensor> Phi3Layer(SyntheticModelSpec s, int l)
    {
        string p = $"blk.{l}.";
        yield return Norm(p + "attn_norm.weight", s.Dim);
        yield return Matrix(p + "attn_qkv.weight", s.Dim, s.QDim + 2 * s.KvDim);
        yield return Matrix(p + "attn_output.weight", s.QDim, s.Dim);
        yield return Norm(p + "ffn_norm.weight", s.Dim);
        yield return Matrix(p + "ffn_up.weight", s.Dim, 2 * s.FfnDim);
        yield return Matrix(p + "ffn_down.weight", s.FfnDim, s.Dim);
    }

    internal static IEnumerable<SyntheticMetadata> ExpertCounts(SyntheticModelSpec s)
    {
        if (s.Experts < 2 || s.ExpertsUsed < 1 || s.ExpertsUsed > s.Experts)
            throw new ArgumentException($"synthetic model '{s.Name}': {s.Arch} with experts needs 2 or more experts and 1..experts used " +
                                        $"(got {s.Experts}, {s.ExpertsUsed})");
        yield return SyntheticMetadata.U32(s.Key("expert_count"), s.Experts);
        yield return SyntheticMetadata.U32(s.Key("expert_used_count"), s.ExpertsUsed);
    }

    /// <summary>The router (ffn_gate_inp) and the stacked expert matrices, shapes [in, out, experts].</summary>
    internal static IEnumerable<SyntheticTensor> Experts(SyntheticModelSpec s, int l, int width)
    {
        string p = $"blk.{l}.";
        // Router gain 2: the chosen experts are clear winners (no near-ties that float rounding could flip).
        yield return Matrix(p + "ffn_gate_inp.weight", s.Dim, s.Experts, 2f);
        yield return new SyntheticTensor(p + "ffn_gate_exps.weight", [s.Dim, width, s.Experts], SyntheticInit.Matrix);
        yield return new SyntheticTensor(p + "ffn_up_exps.weight", [s.Dim, width, s.Experts], SyntheticInit.Matrix);
        yield return new SyntheticTensor(p + "ffn_down_exps.weight", [width, s.Dim, s.Experts], SyntheticInit.Matrix);
    }

    private static IEnumerable<SyntheticTensor> SharedExpert(SyntheticModelSpec s, int l)
    {
        string p = $"blk.{l}.";
        // A vector: llama.cpp multiplies it as a 1-row matrix, one gate logit per token.
        yield return Bias(p + "ffn_gate_inp_shexp.weight", s.Dim, 0.3f);
        yield return Matrix(p + "ffn_gate_shexp.weight", s.Dim, s.FfnDim);
        yield return Matrix(p + "ffn_up_shexp.weight", s.Dim, s.FfnDim);
        yield return Matrix(p + "ffn_down_shexp.weight", s.FfnDim, s.Dim);
    }
}
