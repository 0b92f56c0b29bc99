using Kvq.Tensors;

namespace Kvq.Model.Experts;

/// <summary>One layer's mixture-of-experts weights. Each expert's matrices are views into the file's stacked
/// (experts, out, in) tensors; nothing is copied.</summary>
public sealed class ExpertWeights
{
    /// <summary>(experts, dim): router logits = Router x.</summary>
    public required WeightMatrix Router { get; init; }
    /// <summary>Per expert (ffn, dim), (ffn, dim), (dim, ffn).</summary>
    public required WeightMatrix[] Gate { get; init; }
    public required WeightMatrix[] Up { get; init; }
    public required WeightMatrix[] Down { get; init; }
    /// <summary>Shared expert (Qwen2-MoE), or null.</summary>
    public WeightMatrix? SharedGate { get; init; }
    public WeightMatrix? SharedUp { get; init; }
    public WeightMatrix? SharedDown { get; init; }
    /// <summary>(dim): the shared expert's output is scaled by sigmoid(SharedGateInput · x).</summary>
    public float[]? SharedGateInput { get; init; }

    public IEnumerable<WeightMatrix> Matrices
    {
        get
        {
            yield return Router;
            foreach (var m in Gate.Concat(Up).Concat(Down)) yield return m;
            if (SharedGate != null) yield return SharedGate;
            if (SharedUp != null) yield return SharedUp;
            if (SharedDown != null) yield return SharedDown;
        }
    }
}
