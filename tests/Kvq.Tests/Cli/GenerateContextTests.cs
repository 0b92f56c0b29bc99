using System.Text.RegularExpressions;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>generate's context window: --ctx defaults to the trained context and is refused past it; a prompt that does
/// not fit is refused; a full window shifts (first tokens + the recent half re-read) and generation goes on in words.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class GenerateContextTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-generate-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void CtxPastTheTrainedContextIsRefused() =>
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Fixtures.StoriesGguf, "-p", "Once", "--ctx", "4096"),
            "--ctx 4096 is longer than the model's context (2048 tokens, the length it was trained on)");

    [Fact]
    public void PromptLongerThanTheWindowIsRefused()
    {
        var r = InProcessCli.Run("generate", "-m", Fixtures.StoriesGguf, "-p", string.Join(' ', Enumerable.Repeat("Once upon a time", 20)), "--ctx", "16");
        InProcessCli.AssertUserError(r, "leaves no room in the context window of 16 (--ctx; the model was trained on 2048): shorten the prompt or give a larger --ctx");
    }

    /// <summary>books-19m, a window of 128, 300 greedy tokens: the window fills and shifts, and the text after it is
    /// still words (the greedy loop of a small model repeats phrases, not a single token or bytes).</summary>
    [Fact]
    public void LongGenerationShiftsAndStaysInWords()
    {
        var r = InProcessCli.Run("generate", "-m", Fixtures.BooksGguf, "-p", "It was a dark and stormy night", "-n", "300",
            "--temperature", "0", "--ctx", "128", "-t", "2");
        Assert.Equal(0, r.Code);
        Assert.Contains("decode: 300 tokens", r.Err);
        Assert.Contains("stop: MaxTokens", r.Err);
        Assert.Matches(@"context: window of 128 tokens full [1-9]\d* time\(s\); each time the first 4 and the most recent 62 tokens were kept", r.Err);
        // The last third of the output comes after at least two shifts.
        var tail = r.Out[(r.Out.Length * 2 / 3)..];
        var words = Regex.Matches(tail, "[A-Za-z']+").Select(m => m.Value.ToLowerInvariant()).ToList();
        Assert.True(words.Count >= 20, $"expected words after the window, got: {tail}");
        Assert.True(words.Distinct().Count() >= 5, $"expected varied words after the window, got: {tail}");
        Assert.True(tail.Count(char.IsLetter) > tail.Length / 2, $"expected mostly letters after the window, got: {tail}");
    }

    [Fact]
    public void PromptFromAFileAndFromStandardInput()
    {
        var file = Path.Combine(_dir, "prompt.txt");
        File.WriteAllText(file, "Once upon a time");
        var fromFile = InProcessCli.Run("generate", "-m", Fixtures.StoriesGguf, "-f", file, "-n", "8", "--temperature", "0");
        var fromStdin = InProcessCli.RunWithInput("Once upon a time", "generate", "-m", Fixtures.StoriesGguf, "-f", "-", "-n", "8", "--temperature", "0");
        var fromOption = InProcessCli.Run("generate", "-m", Fixtures.StoriesGguf, "-p", "Once upon a time", "-n", "8", "--temperature", "0");
        Assert.Equal(0, fromFile.Code);
        Assert.StartsWith("Once upon a time", fromFile.Out);
        Assert.Equal(fromOption.Out, fromFile.Out);
        Assert.Equal(fromOption.Out, fromStdin.Out);
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Fixtures.StoriesGguf, "-f", _dir), $"--file {_dir} is a directory");
    }

    [Fact]
    public void DefaultCacheIsF16() =>
        Assert.Contains("KV cache f16:", InProcessCli.Run("generate", "-m", Fixtures.StoriesGguf, "-p", "Once", "-n", "2").Err);
}
