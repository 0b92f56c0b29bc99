using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Cli.Commands;

/// <summary>Built-in model shapes for plans without a model file (`kvq inspect --shape`).</summary>
public static class Shapes
{
    /// <summary>LLaMA-7B: 32 layers, 32 heads x 128 (MHA), FFN 11008, vocab 32000 (the shape of dev/gpu/ModelCheck --sevenb).</summary>
    public static readonly ModelConfig Llama7B = new()
    {
        Architecture = "llama", Dim = 4096, Layers = 32, Heads = 32, KvHeads = 32, HeadDim = 128, FfnDim = 11008, VocabSize = 32000,
        NormEps = 1e-5f, RopeBase = 10000f, RopeDims = 128, RopeStyle = RopeStyle.Normal, ContextLength = 10_000_000,
    };

    public static ModelConfig Get(string name) => name.Trim().ToLowerInvariant() switch
    {
        "llama-7b" or "7b" => Llama7B,
        _ => throw new CliException($"--shape {name}: expected llama-7b"),
    };
}
