using Kvq.IO;

namespace Kvq.Cli.Validation;

/// <summary>A file (--out, --save-session) or folder (--report, --prompt-cache) the command will write at the end: checked
/// before the work, so a folder or file in the way or a read-only place is one line at once rather than an error after
/// minutes of calibration, a whole benchmark, or a server's life.</summary>
public static class OutputFile
{
    public static void Check(string option, string path)
    {
        try
        {
            AtomicFile.CheckWritable(path);
        }
        catch (FileWriteException e)
        {
            throw new CliException($"{option}: {e.Message}");
        }
    }

    /// <summary>A folder the command will write files into (--report, --prompt-cache), checked the same way.</summary>
    public static void CheckFolder(string option, string folder)
    {
        try
        {
            AtomicFile.CheckWritableFolder(folder);
        }
        catch (FileWriteException e)
        {
            throw new CliException($"{option}: {e.Message}");
        }
    }
}
