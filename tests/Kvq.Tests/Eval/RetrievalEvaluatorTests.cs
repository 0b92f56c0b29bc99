using Kvq.Cache;
using Kvq.Eval;

namespace Kvq.Tests.Eval;

/// <summary>The retrieval harness: prompts in trial order, greedy answers, exact-match scoring and the depth x length summary.</summary>
public class RetrievalEvaluatorTests
{
    /// <summary>A task whose prompt the model surely answers: stories260K continues "Once upon a time" with
    /// ", there was a little girl named Lily" (MANIFEST; llama.cpp agrees).</summary>
    private sealed class OnceUponATime(Kvq.Tokenizers.ITokenizer tok, string answer) : IRetrievalTask
    {
        public string Name => "story";
        public int MaxNewTokens => 10;
        public RetrievalPrompt Build(int length, double depth, int trial, int seed) =>
            new("Once upon a time", tok.Encode("Once upon a time", true), answer, 1, length, depth, trial);
        public bool IsCorrect(string generated, string expected) => generated.Contains(" " + expected, StringComparison.Ordinal);
        public double PrefixMatch(string generated, string expected) => IsCorrect(generated, expected) ? 1 : 0;
    }

    [Fact]
    public void KnownAnswerIsScoredCorrectAndAWrongOneIsNot()
    {
        var model = EvalFixtures.StoriesTransformer();
        var eval = new RetrievalEvaluator(model, EvalFixtures.Stories.Tokenizer);
        foreach (var (answer, correct) in new[] { ("girl", true), ("boy", false) })
        {
            var task = new OnceUponATime(EvalFixtures.Stories.Tokenizer, answer);
            var prompts = RetrievalEvaluator.BuildPrompts(task, [100, 200], [0.0, 1.0], trials: 2, seed: 1, maxContext: 512);
            Assert.Equal(8, prompts.Count);
            Assert.Equal([0, 0, 0, 0, 1, 1, 1, 1], prompts.Select(p => p.Trial));   // trials outermost
            Assert.Equal([100, 100, 200, 200], prompts.Take(4).Select(p => p.Length));
            var trials = eval.Evaluate(task, prompts, KvCacheConfig.Parse("f16"));
            Assert.Equal(8, trials.Count);
            Assert.All(trials, t => Assert.StartsWith(", there was a little girl", t.Output));
            Assert.All(trials, t => Assert.Equal(correct, t.Correct));
            var cells = RetrievalEvaluator.Summarize(trials);
            Assert.Equal(4, cells.Count);
            Assert.Equal([(100, 0.0), (100, 1.0), (200, 0.0), (200, 1.0)], cells.Select(c => (c.Length, c.Depth)));
            Assert.All(cells, c => Assert.Equal(2, c.Trials));
            Assert.All(cells, c => Assert.Equal(correct ? 1.0 : 0.0, c.Accuracy));
        }
    }

    [Fact]
    public void SummaryCountsCorrectTrialsPerCell()
    {
        RetrievalTrial T(int len, double depth, int trial, bool ok) =>
            new("f16", "passkey", len, depth, trial, len - 3, depth, "12345", ok ? " 12345" : " 1", ok, ok ? 1 : 0.2, 16.0 + trial, 4096, 0.5);
        var cells = RetrievalEvaluator.Summarize([T(512, 0.5, 0, true), T(256, 0, 0, false), T(512, 0.5, 1, false), T(512, 0.5, 2, true)]);
        Assert.Equal(2, cells.Count);
        Assert.Equal((256, 0.0, 1, 0, 0.0), (cells[0].Length, cells[0].Depth, cells[0].Trials, cells[0].Correct, cells[0].Accuracy));
        Assert.Equal((512, 0.5, 3, 2), (cells[1].Length, cells[1].Depth, cells[1].Trials, cells[1].Correct));
        Assert.Equal(2 / 3.0, cells[1].Accuracy, 12);
        Assert.Equal(2.2 / 3, cells[1].PrefixMatch, 12);
        Assert.Equal(17.0, cells[1].BitsPerElement, 12);
        Assert.Equal(509, cells[1].PromptTokens, 12);
        Assert.Equal(1.5, cells[1].Seconds, 12);
    }

    [Fact]
    public void LengthsBeyondTheContextAreRejected()
    {
        var task = new PasskeyTask(EvalFixtures.Books.Tokenizer);
        var e = Assert.Throws<ArgumentException>(() => RetrievalEvaluator.BuildPrompts(task, [512, 4096], [0.5], 1, 1, maxContext: 4096));
        Assert.Contains("longer than the model's context", e.Message);
    }

    /// <summary>The passkey prompt ends where a number must follow: books-19m answers every trial with one (right or
    /// wrong: a tiny book model), and each trial's verdict is the scorer's.</summary>
    [Fact]
    public void Books19mPasskeyAtShortLength()
    {
        var tok = EvalFixtures.Books.Tokenizer;
        var task = new PasskeyTask(tok);
        var eval = new RetrievalEvaluator(EvalFixtures.BooksTransformer(), tok);
        var prompts = RetrievalEvaluator.BuildPrompts(task, [256], [0.0, 0.5, 1.0], trials: 2, seed: 1, maxContext: 4096);
        var trials = eval.Evaluate(task, prompts, KvCacheConfig.Parse("f16"));
        Assert.Equal(6, trials.Count);
        foreach (var t in trials)
        {
            Assert.Equal(task.IsCorrect(t.Output, t.Answer), t.Correct);
            Assert.Matches("^ ?[0-9]", t.Output); // it answers with a number
        }
    }
}
