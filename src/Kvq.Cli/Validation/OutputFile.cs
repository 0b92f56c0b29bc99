using Kvq.IO;

namespace Kvq.Cli.Validation;

/// <summary>A file the command will write at the end (--out, --save-session): checked before the work, so a folder in
/// the way or a read-only place is one line at once rather than an error after minutes of calibration.</summary>
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
}
