using System.Text;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>Bad option values on every command: one line naming the option and what it accepts, exit code 2, before any
/// model work. Each case is a row of the issue ("accepted silently", ".NET type name", "unhandled exception").</summary>
[Collection(ConsoleCollection.Name)]
public sealed class OptionValidationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-options-test-").FullName;
    private static string Stories => Fixtures.StoriesGguf;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly int MaxThreads = 4 * Environment.ProcessorCount;

    /// <summary>generate with <paramref name="extra"/>, and -n 2 unless they set it.</summary>
    private static string[] Generate(params string[] extra) =>
        ["generate", "-m", Stories, "-p", "Once", .. extra.Any(a => a is "-n" or "--max-tokens") ? [] : new[] { "-n", "2" }, .. extra];

    [Theory]
    [InlineData("-n 0", "-n 0: expected a whole number from 1 to 2147483647")]
    [InlineData("-n -5", "-n -5: expected a whole number from 1 to 2147483647")]
    [InlineData("--max-tokens 10000000000", "--max-tokens 10000000000: expected a whole number from 1 to 2147483647")]
    [InlineData("-n many", "-n many: expected a whole number")]
    [InlineData("--temperature -1", "--temperature -1: expected a number >= 0 (0 = greedy)")]
    [InlineData("--temperature NaN", "--temperature NaN: not a finite number")]
    [InlineData("--temperature Infinity", "--temperature Infinity: not a finite number")]
    [InlineData("--top-p 2", "--top-p 2: expected a number in (0, 1] (1 = off)")]
    [InlineData("--top-p 0", "--top-p 0: expected a number in (0, 1]")]
    [InlineData("--min-p 1.5", "--min-p 1.5: expected a number in [0, 1] (0 = off)")]
    [InlineData("--min-p -0.1", "--min-p -0.1: expected a number in [0, 1]")]
    [InlineData("--top-k -1", "--top-k -1: expected a whole number >= 0 (0 = off)")]
    [InlineData("--repeat-penalty 0", "--repeat-penalty 0: expected a number > 0 (1 = off)")]
    [InlineData("--repeat-penalty -1", "--repeat-penalty -1: expected a number > 0")]
    [InlineData("--seed -2", "--seed -2: expected a whole number >= -1 (-1 = random)")]
    [InlineData("--threads 0", "--threads 0: expected a whole number from 1 to")]
    [InlineData("-t -1", "-t -1: expected a whole number from 1 to")]
    [InlineData("--ctx 1", "--ctx 1: expected a whole number from 2 to")]
    public void GenerateRefusesBadValues(string option, string expected)
    {
        var r = InProcessCli.Run(Generate(option.Split(' ')));
        InProcessCli.AssertUserError(r, expected);
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void ThreadsAreCappedAtFourPerCore()
    {
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--threads", "1000")),
            $"--threads 1000: expected a whole number from 1 to {MaxThreads} (up to 4 x the {Environment.ProcessorCount} cores)");
        Assert.Equal(0, InProcessCli.Run(Generate("--threads", MaxThreads.ToString())).Code);
    }

    /// <summary>A missing or unreadable profile is one line before any of the model's table (it came after half of it).</summary>
    [Fact]
    public void InspectRefusesABadProfileBeforePrintingAnything()
    {
        var missing = InProcessCli.Run("inspect", Stories, "--profile", Path.Combine(_dir, "missing.kvqp"));
        InProcessCli.AssertUserError(missing, "profile not found");
        Assert.Equal("", missing.Out);
        var notAProfile = Path.Combine(_dir, "model.kvqp");
        File.WriteAllBytes(notAProfile, File.ReadAllBytes(Stories).AsSpan(0, 3000).ToArray());
        var bad = InProcessCli.Run("inspect", Stories, "--profile", notAProfile);
        InProcessCli.AssertUserError(bad, "not a KVQuant profile");
        Assert.Equal("", bad.Out);
    }

    /// <summary>A profile fitted to another model is refused before any output too (the GGUF and model tables came
    /// first, then the error).</summary>
    [Fact]
    public void InspectRefusesAnotherModelsProfileBeforePrintingAnything()
    {
        var other = Path.Combine(_dir, "other-model.kvqp");
        Cache.Codecs.KvQuant.KvQuantTestData.Profile(Cache.Codecs.KvQuant.KvQuantTestData.Shape(2, 2, 16), tokens: 300).Save(other);
        var r = InProcessCli.Run("inspect", Stories, "--profile", other, "--kv", "nuq3");
        InProcessCli.AssertUserError(r, "");
        Assert.Contains("test-model", r.Err, StringComparison.Ordinal);
        Assert.Equal("", r.Out);
    }

    /// <summary>The serving engine's KV pool is host memory: serve and chat on the CUDA model would fail every request in
    /// its first step, so they refuse --device cuda up front, by name, before the model loads (exit 2).</summary>
    [Theory]
    [InlineData("serve", "--port", "0")]
    [InlineData("chat")]
    public void ServingCommandsRefuseTheCudaDevice(params string[] command)
    {
        InProcessCli.AssertUserError(InProcessCli.Run([.. command, "-m", Stories, "--device", "cuda"]),
            "--device cuda: the serving engine (serve, chat) keeps its KV pool in host memory");
    }

    /// <summary>kvq serve's bounds have upper ends, checked before the model loads (the model path here does not exist):
    /// a --request-timeout of 2^31 seconds was accepted and every request then failed with a 500.</summary>
    [Theory]
    [InlineData("--request-timeout 2147483647", "--request-timeout 2147483647: expected a whole number from 1 to 604800 (seconds)")]
    [InlineData("--request-timeout 0", "--request-timeout 0: expected a whole number from 1 to 604800 (seconds)")]
    [InlineData("--max-tokens-limit 100000000", "--max-tokens-limit 100000000: expected a whole number from 1 to 16777216")]
    [InlineData("--max-requests 0", "--max-requests 0: expected a whole number from 1 to 65536")]
    [InlineData("--shutdown-timeout 999999", "--shutdown-timeout 999999: expected a whole number from 0 to 3600 (seconds)")]
    [InlineData("--port 65536", "--port 65536: expected a whole number from 0 to 65535")]
    // Not a number: System.CommandLine's "Cannot parse argument 'abc' for option '--port' as expected type 'System.Int32'".
    [InlineData("--port abc", "--port abc: expected a whole number from 0 to 65535")]
    [InlineData("--request-timeout 1.5", "--request-timeout 1.5: expected a whole number from 1 to 604800 (seconds)")]
    [InlineData("--max-body 2GiB", "--max-body 2147483648: expected 1 byte..1 GiB")]
    public void ServeBoundsAreCheckedBeforeTheModelLoads(string option, string message) =>
        InProcessCli.AssertUserError(InProcessCli.Run(["serve", "-m", Path.Combine(_dir, "missing.gguf"), .. option.Split(' ')]), message);

    [Fact]
    public void ServeMaxConcurrencyHasAnUpperBound() =>
        InProcessCli.AssertUserError(InProcessCli.Run("serve", "-m", Stories, "--max-concurrency", "100000"), "--max-concurrency must be in 1..65536 (got 100000)");

    [Fact]
    public void PromptAndFileTogetherAreRefused() =>
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("-f", "x.txt")), "--prompt and --file both give the prompt: use one");

    [Fact]
    public void SeedMinusOneIsRandomAndPrinted()
    {
        var r = InProcessCli.Run(Generate("--seed", "-1"));
        Assert.Equal(0, r.Code);
        var line = r.Err.Split('\n').Single(l => l.StartsWith("kvq: seed ", StringComparison.Ordinal));
        Assert.Matches(@"^kvq: seed \d+ \(random, from --seed -1\)$", line.TrimEnd('\r'));
    }

    [Theory]
    [InlineData("--ctx 0", "--ctx 0: expected a whole number from 1 to")]
    [InlineData("--decode -1", "--decode -1: expected a whole number from 1 to")]
    [InlineData("-r 0", "-r 0: expected a whole number from 1 to 1000")]
    [InlineData("--ctx 4096", "--ctx 4096 is longer than the model's context (2048 tokens, the length it was trained on)")]
    [InlineData("--ctx 2040 --decode 32", "--ctx 2040 + --decode 2072 is longer than the model's context (2048 tokens")]
    public void BenchRefusesBadValues(string option, string expected) =>
        InProcessCli.AssertUserError(InProcessCli.Run(["bench", "-m", Stories, .. option.Split(' ')]), expected);

    [Fact]
    public void EvalPplRefusesNegativeWindows() =>
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", "x.txt", "--windows", "-1"),
            "--windows -1: expected a whole number from 0 to 2147483647 (0 = all)");

    [Fact]
    public void CalibrateRefusesWindowsPastTheContextAndASinkAsLongAsThem()
    {
        var text = Path.Combine(_dir, "t.txt");
        File.WriteAllText(text, "Once upon a time. ");
        var outPath = Path.Combine(_dir, "p.kvqp");
        InProcessCli.AssertUserError(InProcessCli.Run("calibrate", "-m", Stories, "--text", text, "-o", outPath, "--length", "4096"),
            "--length 4096 is longer than the model's context (2048 tokens");
        InProcessCli.AssertUserError(InProcessCli.Run("calibrate", "-m", Stories, "--text", text, "-o", outPath, "--length", "64", "--sink", "64"),
            "--sink 64 leaves nothing to calibrate in windows of --length 64");
        // Defaults (--length 2048, --sink 1) are not mistaken for zeros: the error is about the short text, not the sink.
        var defaults = InProcessCli.Run("calibrate", "-m", Stories, "--text", text, "-o", outPath);
        Assert.DoesNotContain("leaves nothing to calibrate", defaults.Err);
        Assert.False(File.Exists(outPath));
    }

    [Fact]
    public void CalibrateRefusesRotationWithLowRankBases()
    {
        var text = Path.Combine(_dir, "t.txt");
        File.WriteAllText(text, "Once upon a time. ");
        var outPath = Path.Combine(_dir, "p.kvqp");
        InProcessCli.AssertUserError(InProcessCli.Run("calibrate", "-m", Stories, "--text", text, "-o", outPath, "--length", "64", "--rotate", "--lowrank"),
            "--rotate fits the rotated channels; low-rank bases");
        Assert.False(File.Exists(outPath));
    }

    [Fact]
    public void CalibrateRefusesBadRotateValuesAndAutoWithASide()
    {
        var text = Path.Combine(_dir, "t.txt");
        File.WriteAllText(text, "Once upon a time. ");
        var outPath = Path.Combine(_dir, "p.kvqp");
        InProcessCli.AssertUserError(InProcessCli.Run("calibrate", "-m", Stories, "--text", text, "-o", outPath, "--length", "64", "--rotate", "sometimes"),
            "--rotate 'sometimes': expected");
        InProcessCli.AssertUserError(InProcessCli.Run("calibrate", "-m", Stories, "--text", text, "-o", outPath, "--length", "64", "--rotate", "auto", "--rotate-side", "keys"),
            "--rotate auto chooses the side");
        InProcessCli.AssertUserError(InProcessCli.Run("calibrate", "-m", Stories, "--text", text, "-o", outPath, "--length", "64", "--rotate", "auto", "--lowrank"),
            "low-rank bases");
        foreach (var margin in new[] { "0", "-1", "101", "NaN" })
            InProcessCli.AssertUserError(InProcessCli.Run("calibrate", "-m", Stories, "--text", text, "-o", outPath, "--length", "64", "--value-margin", margin),
                "--value-margin");
        Assert.False(File.Exists(outPath));
    }

    [Fact]
    public void DirectoryAsTextSaysSo() =>
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", _dir), $"--text {_dir} is a directory: give a text file");

    [Fact]
    public void Latin1TextIsScoredWithAWarning()
    {
        var text = Path.Combine(_dir, "latin1.txt");
        var story = TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..3_000];
        File.WriteAllBytes(text, Encoding.Latin1.GetBytes("Caf\u00e9 na\u00efve. " + story));
        var r = InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", text, "--ctx", "64", "--windows", "1", "-t", "1");
        Assert.Equal(0, r.Code);
        Assert.Contains($"kvq: warning: --text {text} is not valid UTF-8 (first bad byte at offset 3; Latin-1 or another legacy encoding?)", r.Err);
    }

    /// <summary>A UTF-16 file with its byte order mark (Notepad's "Unicode") is read as UTF-16, so it scores as the
    /// text it is and gets no warning; the warning said its bytes were read as U+FFFD, which they were not.</summary>
    [Fact]
    public void Utf16TextWithAByteOrderMarkIsReadWithoutAWarning()
    {
        var story = TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..3_000];
        var utf8 = Path.Combine(_dir, "utf8.txt");
        var utf16 = Path.Combine(_dir, "utf16.txt");
        File.WriteAllText(utf8, story, new UTF8Encoding(false));
        File.WriteAllText(utf16, story, Encoding.Unicode);   // FF FE, then UTF-16 LE
        Assert.Null(Kvq.Cli.Validation.TextInput.FirstInvalidUtf8(utf16));
        var a = InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", utf8, "--ctx", "64", "--windows", "1", "-t", "1", "--json");
        var b = InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", utf16, "--ctx", "64", "--windows", "1", "-t", "1", "--json");
        Assert.True(b.Code == 0, b.Err);
        Assert.DoesNotContain("warning", b.Err, StringComparison.Ordinal);
        // The same text: the same tokens scored, the same perplexity.
        static (double Ppl, int Tokens) Row(string json)
        {
            var row = System.Text.Json.JsonDocument.Parse(json.Trim()).RootElement;
            return (row.GetProperty("ppl").GetDouble(), row.GetProperty("tokens").GetInt32());
        }
        Assert.Equal(Row(a.Out), Row(b.Out));
    }

    /// <summary>A bad --kv spec for inspect is one line before any of the model's tables (it printed the GGUF and model
    /// tables and a KV table header, then the error).</summary>
    [Theory]
    [InlineData("bogus", "unknown KV format 'bogus'")]
    [InlineData("f16,nuq3-1%", "needs a calibration profile")]
    public void InspectRefusesABadKvSpecBeforePrintingAnything(string spec, string expected)
    {
        var r = InProcessCli.Run("inspect", Stories, "--kv", spec);
        InProcessCli.AssertUserError(r, expected);
        Assert.Equal("", r.Out);
    }

    /// <summary>A folder given as --profile or --chat-template says so (it said "not found").</summary>
    [Fact]
    public void AFolderAsProfileOrChatTemplateSaysSo()
    {
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--kv", "nuq3-1%", "--profile", _dir)), $"--profile {_dir} is a directory");
        InProcessCli.AssertUserError(InProcessCli.Run("inspect", Stories, "--profile", _dir), $"--profile {_dir} is a directory");
        InProcessCli.AssertUserError(InProcessCli.Run("serve", "-m", Stories, "--port", "0", "--chat-template", _dir), $"--chat-template {_dir} is a directory");
    }

    /// <summary>The engine's refusals are one line in the user's terms: ArgumentException's " (Parameter 'kv_budget')"
    /// was printed after them.</summary>
    [Fact]
    public void AKvBudgetThatHoldsNoSequenceIsOneLineWithoutTheParameterName()
    {
        var r = InProcessCli.Run("serve", "-m", Stories, "--port", "0", "--kv-budget", "1KiB");
        InProcessCli.AssertUserError(r, "holds no sequence of f16");
        Assert.DoesNotContain("(Parameter", r.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void BinaryTextGetsAWarning()
    {
        var text = Path.Combine(_dir, "binary.txt");
        File.WriteAllBytes(text, [.. Encoding.UTF8.GetBytes(new string('a', 500)), 0, 0xff, 0xfe, 0, 1, 2]);
        var r = InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", text, "--ctx", "32", "--windows", "1", "-t", "1");
        Assert.Contains("is not valid UTF-8 (first bad byte at offset 501; it holds NUL bytes, so it may be binary)", r.Err);
    }

    [Fact]
    public void TextFileAsModelNamesWhatItLooksLike()
    {
        var path = Path.Combine(_dir, "story.bin");
        File.WriteAllText(path, "Once upon a time there was a text file passed as a model.\n");
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", path, "-p", "x"), $"{path} is not a model: it looks like a text file");
    }

    [Fact]
    public void Llama2cWithoutATokenizerBesideItTakesTokenizer()
    {
        var model = Path.Combine(_dir, "stories.bin");
        File.CreateSymbolicLink(model, Fixtures.StoriesBin);
        // Beside the link's target there is tok512.bin; a copy of the checkpoint alone has none.
        var alone = Directory.CreateDirectory(Path.Combine(_dir, "alone")).FullName;
        var copy = Path.Combine(alone, "model.bin");
        File.Copy(Fixtures.StoriesBin, copy);
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", copy, "-p", "Once", "-n", "2"),
            "no tokenizer found beside");
        Assert.Contains("--tokenizer FILE", InProcessCli.Run("generate", "-m", copy, "-p", "Once", "-n", "2").Err);
        var ok = InProcessCli.Run("generate", "-m", copy, "--tokenizer", Fixtures.StoriesTokenizerBin, "-p", "Once upon a time", "-n", "4", "--temperature", "0");
        Assert.Equal(0, ok.Code);
        Assert.StartsWith("Once upon a time", ok.Out);
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", copy, "--tokenizer", Path.Combine(_dir, "nope.bin"), "-p", "x"),
            "--tokenizer " + Path.Combine(_dir, "nope.bin") + ": file not found");
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Stories, "--tokenizer", Fixtures.StoriesTokenizerBin, "-p", "x"),
            "is a GGUF file, which carries its own tokenizer");
    }

    /// <summary>A --sink past the model's context (stories260K: 2048 tokens) is refused on every command that builds a
    /// cache; 2000000000 was an unhandled OverflowException (the sink bank's size), 99999 reserved copies for tokens that
    /// never come.</summary>
    [Theory]
    [InlineData("generate -p Once -n 2")]
    [InlineData("bench --ctx 64 --decode 4 -r 1")]
    [InlineData("eval memory --kv f16")]
    [InlineData("eval ppl --ctx 64 --windows 1 --text TEXT")]
    [InlineData("bench serve --kv f16 --requests 1 --prompt-tokens 16 --output-tokens 2 --concurrency 1")]
    [InlineData("serve --port 0")]
    [InlineData("inspect --kv f16")]
    public void SinkLongerThanTheContextIsRefused(string command)
    {
        var text = Fixtures.Text("tinystories/TinyStories-valid.first1000.txt");
        var args = command.Split(' ').Select(a => a == "TEXT" ? text : a).ToList();
        int at = args[0] is "bench" or "eval" && args[1] is "serve" or "memory" or "ppl" ? 2 : 1;
        args.InsertRange(at, args[0] == "inspect" ? [Stories] : ["-m", Stories]);
        foreach (var sink in new[] { "2049", "2000000000" })
            InProcessCli.AssertUserError(InProcessCli.Run([.. args, "--sink", sink]),
                $"--sink {sink} is longer than the model's context (2048 tokens)");
    }

    /// <summary>A --kv-budget far past any machine (the pool counts blocks in 32 bits) was an unhandled OverflowException.</summary>
    [Theory]
    [InlineData("serve", "--port", "0")]
    [InlineData("chat")]
    [InlineData("bench", "serve", "--kv", "f16", "--requests", "1", "--prompt-tokens", "16", "--output-tokens", "2", "--concurrency", "1", "--text", "TEXT")]
    public void KvBudgetTooLargeForThePoolIsRefused(params string[] command) =>
        InProcessCli.AssertUserError(InProcessCli.Run([.. command.Select(a => a == "TEXT" ? Fixtures.Text("tinystories/TinyStories-valid.first1000.txt") : a),
                "-m", Stories, "--kv-budget", "1000TiB"]),
            "--kv-budget 1000TiB: too large: the KV pool counts its 32-token blocks in 32 bits");
}
