using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Model.Experts;
using Kvq.Tensors;

namespace Kvq.Model.Loading;

/// <summary>
/// The parts of a block whose tensors differ between architectures: attention projections stored separately or fused
/// (Phi-3's attn_qkv), the feed-forward stored as gate + up, fused (Phi-3's ffn_up holding gate then up), or as
/// experts (Mixtral, Qwen2-MoE's stacked ffn_*_exps tensors and shared expert). Fused and stacked tensors become
/// row views (<see cref="WeightMatrix.SliceRows"/>), so the forward pass sees ordinary matrices.
/// </summary>
internal sealed unsafe class GgufLayerParts(GgufFile gguf, ModelConfig config, Func<string, int, int, WeightMatrix> matrix,
    Func<string, int, float[]> vector, Action<string> use)
{
    /// <summary>Wq, Wk, Wv of block <paramref name="p"/> ("blk.{i}.").</summary>
    public (WeightMatrix Q, WeightMatrix K, WeightMatrix V) Attention(string p)
    {
        var c = config;
        if (!gguf.HasTensor(p + "attn_qkv.weight"))
            return (matrix(p + "attn_q.weight", c.QDim, c.Dim), matrix(p + "attn_k.weight", c.KvDim, c.Dim), matrix(p + "attn_v.weight", c.KvDim, c.Dim));
        // llama.cpp (phi3) views the fused product as q = rows [0, qDim), k = the next kvDim, v = the last kvDim.
        var qkv = matrix(p + "attn_qkv.weight", c.QDim + 2 * c.KvDim, c.Dim);
        return (qkv.SliceRows(p + "attn_qkv.weight[q]", 0, c.QDim),
                qkv.SliceRows(p + "attn_qkv.weight[k]", c.QDim, c.KvDim),
                qkv.SliceRows(p + "attn_qkv.weight[v]", c.QDim + c.KvDim, c.KvDim));
    }

    /// <summary>The dense feed-forward (gate, up, down) or the experts of block <paramref name="p"/>.</summary>
    public (WeightMatrix? Gate, WeightMatrix? Up, WeightMatrix? Down, ExpertWeights? Experts) FeedForward(string p)
    {
        var c = config;
        if (c.Experts != null) return (null, null, null, Experts(p, c.Experts));
        var down = matrix(p + "ffn_down.weight", c.Dim, c.FfnDim);
        if (gguf.HasTensor(p + "ffn_gate.weight"))
            return (matrix(p + "ffn_gate.weight", c.FfnDim, c.Dim), matrix(p + "ffn_up.weight", c.FfnDim, c.Dim), down, null);
        // Phi-3: ffn_up holds 2*ffn rows; llama.cpp's swiglu applies silu to the first half and multiplies by the second.
        var fused = matrix(p + "ffn_up.weight", 2 * c.FfnDim, c.Dim);
        return (fused.SliceRows(p + "ffn_up.weight[gate]", 0, c.FfnDim), fused.SliceRows(p + "ffn_up.weight[up]", c.FfnDim, c.FfnDim), down, null);
    }

    private ExpertWeights Experts(string p, ExpertConfig e)
    {
        var c = config;
        var router = matrix(p + "ffn_gate_inp.weight", e.Count, c.Dim);
        WeightMatrix[] Stacked(string name, int rows, int cols)
        {
            var t = gguf.Tensor(name);
            if (t.Dims.Length != 3 || t.Dims[0] != cols || t.Dims[1] != rows || t.Dims[2] != e.Count)
                throw new ModelFormatException(gguf.Path, $"tensor '{name}'", t.HeaderOffset,
                    $"expected shape [{cols}, {rows}, {e.Count}] ({e.Count} stacked experts), found {t.Shape}");
            use(name);
            var all = new WeightMatrix(name, rows * e.Count, cols, t.Type, gguf.TensorPointer(t));
            var parts = new WeightMatrix[e.Count];
            for (int i = 0; i < e.Count; i++) parts[i] = all.SliceRows($"{name}[{i}]", i * rows, rows);
            return parts;
        }
        var gate = Stacked(p + "ffn_gate_exps.weight", e.FfnDim, c.Dim);
        var up = Stacked(p + "ffn_up_exps.weight", e.FfnDim, c.Dim);
        var down = Stacked(p + "ffn_down_exps.weight", c.Dim, e.FfnDim);
        if (e.SharedFfnDim == 0)
            return new ExpertWeights { Router = router, Gate = gate, Up = up, Down = down };
        return new ExpertWeights
        {
            Router = router, Gate = gate, Up = up, Down = down,
            SharedGate = matrix(p + "ffn_gate_shexp.weight", e.SharedFfnDim, c.Dim),
            SharedUp = matrix(p + "ffn_up_shexp.weight", e.SharedFfnDim, c.Dim),
            SharedDown = matrix(p + "ffn_down_shexp.weight", c.Dim, e.SharedFfnDim),
            SharedGateInput = vector(p + "ffn_gate_inp_shexp.weight", c.Dim),
        };
    }

    /// <summary>The expert hyper-parameters of <paramref name="arch"/>, or null for a dense model. llama.cpp: llama
    /// files with experts are Mixtral (weights renormalised over the chosen experts); qwen2moe uses the softmax
    /// probabilities as they are and has a shared expert.</summary>
    public static ExpertConfig? ReadExperts(GgufFile gguf, string arch, int ffnDim)
    {
        long count = gguf.TryGetInt($"{arch}.expert_count") ?? 0;
        if (count == 0)
        {
            if (arch is "qwen2moe" or "qwen3moe")
                throw new ModelFormatException(gguf.Path, $"metadata '{arch}.expert_count'", 0, $"a {arch} model needs its expert count");
            return null;
        }
        int used = (int)(gguf.TryGetInt($"{arch}.expert_used_count")
            ?? throw new ModelFormatException(gguf.Path, $"metadata '{arch}.expert_used_count'", 0, $"required with {arch}.expert_count"));
        int width = (int)(gguf.TryGetInt($"{arch}.expert_feed_forward_length") ?? ffnDim);
        int shared = arch == "qwen2moe" ? (int)(gguf.TryGetInt($"{arch}.expert_shared_feed_forward_length") ?? width) : 0;
        return new ExpertConfig(checked((int)count), used, width, NormalizeWeights: arch != "qwen2moe", shared);
    }
}
