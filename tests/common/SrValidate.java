// Runs PixelMed's DicomSRValidator (Debian libpixelmed-java) on every file named on the command line in one JVM:
// building the validator compiles PixelMed's 6 MB template stylesheet, which costs more than validating a file.
// Prints "=== <file>" and then PixelMed's report for that file. Run as a source file (java SrValidate.java ...).
import com.pixelmed.validate.DicomSRValidator;

public class SrValidate {
  public static void main(String[] args) throws Exception {
    DicomSRValidator validator = new DicomSRValidator();
    for (String file : args) {
      System.out.println("=== " + file);
      System.out.print(validator.validate(file));
      System.out.flush();
    }
  }
}
