Console.WriteLine("kvq");
