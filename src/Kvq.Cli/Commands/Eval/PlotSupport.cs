namespace Kvq.Cli.Commands.Eval;

/// <summary>
/// Whether the report's PNG plots can be drawn: ScottPlot draws through SkiaSharp, whose native library
/// (libSkiaSharp.so / libSkiaSharp.dll / libSkiaSharp.dylib) must sit beside kvq or in the runtime's native folder. A
/// NativeAOT binary copied without it used to fail in a type initializer after the whole evaluation and exit 0
/// (issue 16); <see cref="Ensure"/> checks before anything runs, so a `--report` run fails at once, in one line.
/// </summary>
public static class PlotSupport
{
    /// <summary>Throws a <see cref="CliException"/> (exit code 2) naming the library and the fix when plots cannot be drawn.</summary>
    public static void Ensure(string option)
    {
        var e = TryDraw();
        if (e == null) return;
        var inner = e is TypeInitializationException { InnerException: { } i } ? i : e;
        throw new CliException($"{option} draws PNG plots with SkiaSharp, whose native library ({LibraryName}) could not be loaded " +
                               $"beside kvq in {AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)} ({inner.GetType().Name}: " +
                               $"{FirstLine(inner.Message)}): copy {LibraryName} from the publish folder next to kvq, or leave out {option}");
    }

    private static string LibraryName => OperatingSystem.IsWindows() ? "libSkiaSharp.dll" : OperatingSystem.IsMacOS() ? "libSkiaSharp.dylib" : "libSkiaSharp.so";

    private static Exception? TryDraw()
    {
        try
        {
            using var bitmap = new SkiaSharp.SKBitmap(2, 2);
            using var canvas = new SkiaSharp.SKCanvas(bitmap);
            canvas.Clear(SkiaSharp.SKColors.White);
            return null;
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return e;
        }
    }

    private static string FirstLine(string s)
    {
        int n = s.IndexOfAny(['\r', '\n']);
        return (n < 0 ? s : s[..n]).TrimEnd('.', ' ', ':');
    }
}
