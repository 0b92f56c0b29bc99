using Kvq.Tests.Eval;
using Kvq.Tests.Model;

namespace Kvq.Tests.Cli;

/// <summary>What the loader decided on its own is said on stderr: a GGUF without output.weight runs tied, and says so.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class ModelNotesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-notes-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void TiedOutputIsSaidOnStderr()
    {
        var path = TinyModelWriter.Write(new TinyModelSpec(Tied: true), _dir);
        var r = InProcessCli.Run("generate", "-m", path, "-p", "Once", "-n", "2");
        Assert.Equal(0, r.Code);
        Assert.Contains($"kvq: note: {Path.GetFileName(path)} has no output.weight: the output is tied to token_embd.weight (tied embeddings, as llama.cpp does for llama)", r.Err);
    }
}
