using Kvq.Model;

namespace Kvq.Cuda.Model;

/// <summary>What the CUDA forward pass implements: the dense llama-family block (llama, mistral, qwen2; phi3's fused
/// tensors load as views of the same matrices). Anything else is refused before any device work, with a typed error.</summary>
public static class CudaArchitectureSupport
{
    /// <summary>Throws <see cref="UnsupportedArchitectureException"/> for a model the CUDA kernels cannot run.</summary>
    public static void Check(ModelConfig c)
    {
        if (c.Experts != null)
            throw new UnsupportedArchitectureException(
                $"the CUDA backend has no mixture-of-experts feed-forward ({c.Architecture}, {c.Experts.Count} experts, {c.Experts.Used} used); run it on the CPU");
    }
}
