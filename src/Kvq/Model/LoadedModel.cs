using Kvq.Tokenizers;

namespace Kvq.Model;

/// <summary>Weights and the tokenizer that goes with them.</summary>
public sealed class LoadedModel(ModelWeights weights, ITokenizer tokenizer) : IDisposable
{
    public ModelWeights Weights { get; } = weights;
    public ITokenizer Tokenizer { get; } = tokenizer;
    public void Dispose() => Weights.Dispose();
}
