using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Tests.Eval;

/// <summary>Models with their own (Kvq) tokenizers and short token streams for the evaluator tests, loaded once.</summary>
public static class EvalFixtures
{
    private static readonly Lazy<LoadedModel> BooksModel = new(() => ModelLoader.Load(Fixtures.BooksGguf));
    private static readonly Lazy<LoadedModel> StoriesModel = new(() => ModelLoader.Load(Fixtures.StoriesGguf));
    private static readonly Lazy<string> MobyText = new(() => TextFixtures.Read(Fixtures.MobyDick));
    // The first ~80k tokens of Moby Dick (the whole book takes seconds to tokenize and no test needs it).
    private static readonly Lazy<int[]> MobyHead = new(() => Books.Tokenizer.Encode(MobyText.Value[..400_000], addBos: false));
    private static readonly Lazy<int[]> StoriesText = new(() =>
        Stories.Tokenizer.Encode(TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..60_000], addBos: false));

    public static LoadedModel Books => BooksModel.Value;
    public static LoadedModel Stories => StoriesModel.Value;
    public static string MobyDick => MobyText.Value;
    public static int[] MobyDickHeadTokens => MobyHead.Value;
    public static int[] StoriesTokens => StoriesText.Value;

    public static Transformer BooksTransformer() => new(Books.Weights, new Parallelism(2));
    public static Transformer StoriesTransformer() => new(Stories.Weights, new Parallelism(2));
}
