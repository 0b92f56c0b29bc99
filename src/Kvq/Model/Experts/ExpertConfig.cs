namespace Kvq.Model.Experts;

/// <summary>
/// The mixture-of-experts feed-forward of a model (Mixtral, Qwen2-MoE, ...): <paramref name="Count"/> expert SwiGLU
/// networks of width <paramref name="FfnDim"/>, of which a softmax router picks <paramref name="Used"/> per token.
/// </summary>
/// <param name="Count">Experts per layer.</param>
/// <param name="Used">Experts each token goes through (top-k of the router's probabilities).</param>
/// <param name="FfnDim">Hidden width of each expert.</param>
/// <param name="NormalizeWeights">The k chosen probabilities are rescaled to sum to 1 (Mixtral, Qwen3-MoE); otherwise
/// they are used as they are (Qwen2-MoE).</param>
/// <param name="SharedFfnDim">Hidden width of the shared expert every token goes through, scaled by a sigmoid gate
/// (Qwen2-MoE); 0 when there is none.</param>
public sealed record ExpertConfig(int Count, int Used, int FfnDim, bool NormalizeWeights, int SharedFfnDim = 0)
{
    public void Validate(string source)
    {
        if (Count < 2 || Used < 1 || Used > Count || FfnDim <= 0 || SharedFfnDim < 0)
            throw new Formats.ModelFormatException(source, "expert hyper-parameters", 0,
                $"expected 2 or more experts, 1..count used and a positive width: {Count} experts, {Used} used, width {FfnDim}, shared width {SharedFfnDim}");
    }
}
