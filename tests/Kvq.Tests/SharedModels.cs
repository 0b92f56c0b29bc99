using Kvq.LlamaCpp;
using Kvq.Model;
using Kvq.Model.Loading;

namespace Kvq.Tests;

/// <summary>Models loaded once per test run (loading is cheap, but llama.cpp's is not free).</summary>
public static class SharedModels
{
    private static readonly Lazy<ModelWeights> BooksWeights = new(() => GgufModelLoader.Load(Fixtures.BooksGguf));
    private static readonly Lazy<LlamaCppModel> BooksPeer = new(() => new LlamaCppModel(Fixtures.BooksGguf));
    private static readonly Lazy<int[]> MobyTokens = new(() => BooksPeer.Value.Tokenize(TextFixtures.Read(Fixtures.MobyDick), addBos: false));

    public static ModelWeights Books => BooksWeights.Value;
    public static LlamaCppModel BooksLlamaCpp => BooksPeer.Value;
    /// <summary>Moby Dick tokenized by llama.cpp (no BOS).</summary>
    public static int[] MobyDickTokens => MobyTokens.Value;
}
