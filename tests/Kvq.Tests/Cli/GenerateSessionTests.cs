using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>kvq generate --save-session / --load-session: a restored prompt generates the same greedy text as
/// recomputing it (alone, or continued by more prompt text); a bad session file is one clear line and exit code 2.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class GenerateSessionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-session-cli-").FullName;
    private static readonly string Text = EndAtSentence(TextFixtures.Read(Fixtures.MobyDick).Substring(30000, 900));

    private static string EndAtSentence(string s) => s[..(s.LastIndexOf('.') + 1)];

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Generate(string kv, params string[] more) =>
        InProcessCli.Run(["generate", "-m", Fixtures.BooksGguf, "-n", "20", "--temperature", "0", "-t", "2", "--kv", kv, .. more]);

    [Theory]
    [InlineData("f16", "0")]
    [InlineData("kivi2", "1")]
    public void RestoredSessionGeneratesWhatRecomputingDoes(string kv, string sink)
    {
        var file = Path.Combine(_dir, "moby.kvqs");
        var saved = Generate(kv, "--sink", sink, "-p", Text, "--save-session", file);
        Assert.Equal(0, saved.Code);
        Assert.Matches(@"session: saved \d+ tokens to ", saved.Err);

        var restored = Generate(kv, "--sink", sink, "--load-session", file);
        Assert.Equal(0, restored.Code);
        Assert.Equal(saved.Out, restored.Out);
        Assert.Contains("all from the session", restored.Err);
        Assert.Contains("ran 0 more prompt tokens", restored.Err);

        // More prompt after the session's: only the rest runs, and the text is what the whole prompt gives.
        var whole = Text + " And so the whale";
        var plain = Generate(kv, "--sink", sink, "-p", whole);
        var continued = Generate(kv, "--sink", sink, "-p", whole, "--load-session", file);
        Assert.Equal(0, continued.Code);
        Assert.Equal(plain.Out, continued.Out);
        Assert.Matches(@"ran [1-9]\d? more prompt tokens", continued.Err);
    }

    [Fact]
    public void BadSessionFilesAreUserErrors()
    {
        var file = Path.Combine(_dir, "s.kvqs");
        Assert.Equal(0, Generate("f16", "-p", Text, "--save-session", file).Code);

        InProcessCli.AssertUserError(Generate("q8_0", "--load-session", file), $"session file {file}: saved with another KV format: saved as f16");
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Fixtures.StoriesGguf, "--load-session", file, "-n", "2"),
            $"session file {file}: saved with another model");
        InProcessCli.AssertUserError(Generate("f16", "-p", "Call me Ishmael.", "--load-session", file),
            "does not start with the session's");

        var bytes = File.ReadAllBytes(file);
        bytes[bytes.Length / 2] ^= 0x10;
        var flipped = Path.Combine(_dir, "flipped.kvqs");
        File.WriteAllBytes(flipped, bytes);
        InProcessCli.AssertUserError(Generate("f16", "--load-session", flipped), $"session file {flipped}: checksum mismatch");

        var cut = Path.Combine(_dir, "cut.kvqs");
        File.WriteAllBytes(cut, bytes[..(bytes.Length / 3)]);
        InProcessCli.AssertUserError(Generate("f16", "--load-session", cut), $"session file {cut}: truncated");

        InProcessCli.AssertUserError(Generate("f16", "-p", Text, "--save-session", file, "--policy", "h2o", "--budget", "0.5"),
            "a cache under a token policy (--policy) cannot be saved");
        InProcessCli.AssertUserError(Generate("f16", "--load-session", Path.Combine(_dir, "none.kvqs")), "cannot be read");
    }
}
